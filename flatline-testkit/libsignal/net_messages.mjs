// Messages through libsignal-net only (no REST for sending or receiving): Alice sends with the typed
// AuthenticatedChatConnection.sendMessage while Bob is offline; Bob connects with connectAuthenticatedChat and gets
// the backlog of 3 (onIncomingMessage) before onQueueEmpty, decrypts them in order and acknowledges two; the third
// (never acknowledged, then disconnected) comes back on the next connection with the same serverGuid and the same
// bytes, libsignal refusing it as a DuplicatedMessage; once acknowledged it is gone. Alice's connection receives a
// server delivery receipt for each acknowledgement. With "statuses": the typed sends that fail (404, 409, 410,
// 413, 401 on the unauthenticated connection, 429) and the same requests through the connection's raw fetch.
//
// Alice and Bob may be on different server processes (each has its own REST base and chat listener).
//
// Usage: node net_messages.mjs <config.json>, where the file holds
//   {"alice": {"aci", "password", "identityPrivate", "registrationId",
//              "base": REST URL, "chat": {"port", "rootCertificate": DER file path}},
//    "bob":   {...the same...},
//    "statuses": true | false}
// A REST base over https needs NODE_EXTRA_CA_CERTS naming the root certificate (PEM).
// Prints one JSON line of observations (the Rust test asserts them) and exits 0, or prints the failure and exits 1.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as S from '@signalapp/libsignal-client';
import { Client, b64, check, dec, enc, localNet, parseEnvelope, withTimeout } from './signal_client.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = { ok: true, steps: [] };

const alice = new Client('alice', config.alice, config.alice.base);
const bob = new Client('bob', config.bob, config.bob.base);
await alice.uploadKeys();
await bob.uploadKeys();

// Records what one authenticated connection is pushed; `until(pred)` waits (bounded) for a condition on it.
function recorder(name) {
  const r = { pushes: [], queueEmptyAt: [], interrupted: null, waiters: [] };
  const wake = () => {
    const w = r.waiters;
    r.waiters = [];
    for (const f of w) f();
  };
  r.listener = {
    onIncomingMessage(envelope, timestamp, ack) {
      r.pushes.push({ bytes: new Uint8Array(envelope), envelope: parseEnvelope(new Uint8Array(envelope)), timestamp, ack });
      wake();
    },
    onQueueEmpty() { r.queueEmptyAt.push(r.pushes.length); wake(); },
    onConnectionInterrupted(cause) { r.interrupted = cause ? cause.code ?? String(cause) : null; wake(); },
  };
  r.until = (pred, what) => withTimeout(new Promise((resolve) => {
    const test = () => (pred() ? resolve() : r.waiters.push(test));
    test();
  }), 30000, `${name}: ${what}`);
  return r;
}

async function connect(who, rec) {
  const net = localNet(config[who.name].chat);
  const chat = await withTimeout(net.connectAuthenticatedChat(`${who.aci}.1`, who.password, false, rec.listener),
    30000, `${who.name} connects`);
  return { net, chat };
}

const bobId = S.Aci.fromUuid(bob.aci);
const aliceRec = recorder('alice');
const { net: aliceNet, chat: aliceChat } = await connect(alice, aliceRec);
await aliceRec.until(() => aliceRec.queueEmptyAt.length === 1, 'queue empty');
out.steps.push('alice connected');

// --- Bob offline: three messages sent with the typed send ---
const bobReg = await alice.startSession(bob);
const texts = ['one', 'two', 'three'];
for (const text of texts) {
  const c = await S.signalEncrypt(enc(text), bob.address, alice.address, alice.sessionStore, alice.identityStore);
  await aliceChat.sendMessage({
    destination: bobId, timestamp: Date.now(),
    contents: [{ deviceId: 1, registrationId: bobReg, contents: c }], onlineOnly: false, urgent: true,
  });
}
out.steps.push('three messages sent while bob is offline');

// --- Bob connects: the backlog, then onQueueEmpty ---
let bobRec = recorder('bob');
let bobChat = (await connect(bob, bobRec)).chat;
await bobRec.until(() => bobRec.queueEmptyAt.length === 1, 'queue empty after the backlog');
const first = bobRec.pushes.map((p) => p.envelope);
out.first = {
  queueEmptyAfter: bobRec.queueEmptyAt[0],
  types: first.map((e) => e.type),
  sources: first.map((e) => e.sourceServiceId),
  guids: first.map((e) => e.serverGuid),
  texts: [],
};
for (const e of first) out.first.texts.push(await bob.decryptFrom(e.type, e.content, alice.aci, 1));
// Two acknowledged, the third not; each acknowledgement queues a delivery receipt that reaches Alice's socket.
bobRec.pushes[0].ack.send(200);
bobRec.pushes[1].ack.send(200);
await aliceRec.until(() => aliceRec.pushes.length >= 2, 'two delivery receipts');
const unacked = bobRec.pushes[2];
await bobChat.disconnect();
out.steps.push('backlog received, two acknowledged');

// --- Reconnect: only the unacknowledged message, with the same guid and bytes ---
bobRec = recorder('bob again');
bobChat = (await connect(bob, bobRec)).chat;
await bobRec.until(() => bobRec.queueEmptyAt.length === 1, 'queue empty after the redelivery');
const again = bobRec.pushes.map((p) => p.envelope);
out.second = {
  queueEmptyAfter: bobRec.queueEmptyAt[0],
  guids: again.map((e) => e.serverGuid),
  sameBytes: bobRec.pushes.length === 1 && Buffer.from(bobRec.pushes[0].bytes).equals(Buffer.from(unacked.bytes)),
};
try {
  await bob.decryptFrom(again[0].type, again[0].content, alice.aci, 1);
  out.second.redecrypt = 'decrypted';
} catch (e) {
  out.second.redecrypt = e.code ?? String(e);
}
bobRec.pushes[0].ack.send(200);
await aliceRec.until(() => aliceRec.pushes.length >= 3, 'the third delivery receipt');
await bobChat.disconnect();
out.receipts = aliceRec.pushes.map((p) => ({ type: p.envelope.type, source: p.envelope.sourceServiceId }));
for (const p of aliceRec.pushes) p.ack.send(200);

// --- And once more: nothing left ---
bobRec = recorder('bob a third time');
bobChat = (await connect(bob, bobRec)).chat;
await bobRec.until(() => bobRec.queueEmptyAt.length === 1, 'queue empty, nothing left');
out.third = { queueEmptyAfter: bobRec.queueEmptyAt[0] };
await bobChat.disconnect();
out.steps.push('the unacknowledged message redelivered, then gone');

// --- Failing sends: libsignal's typed errors, and the raw answers ---
const errorOf = async (f) => {
  try {
    await f();
    return { code: 'sent' };
  } catch (e) {
    const o = { code: e.code ?? String(e), message: String(e.message ?? e) };
    if (e.entries) {
      o.entries = e.entries.map((x) => ({
        account: x.account.getServiceIdString(), missingDevices: x.missingDevices, extraDevices: x.extraDevices,
        staleDevices: x.staleDevices,
      }));
    }
    if (e.retryAfterSecs !== undefined) o.retryAfterSecs = e.retryAfterSecs;
    return o;
  }
};
const raw = async (chat, path, messages, headers = []) => {
  const r = await chat.fetch({
    verb: 'PUT', path, headers: [['content-type', 'application/json'], ...headers],
    body: enc(JSON.stringify({ messages, online: false, urgent: true, timestamp: Date.now() })),
  });
  const h = Object.fromEntries(r.headers.map(([k, v]) => [k.toLowerCase(), v]));
  const text = r.body && r.body.length ? dec(r.body) : '';
  return { status: r.status, retryAfter: h['retry-after'] ?? null, contentType: h['content-type'] ?? null,
    body: text ? JSON.parse(text) : null };
};
const encrypt = (text) => S.signalEncrypt(enc(text), bob.address, alice.address, alice.sessionStore,
  alice.identityStore);
const wire = (c, deviceId, registrationId) => ({
  type: c.type() === S.CiphertextMessageType.PreKey ? 3 : 1, destinationDeviceId: deviceId,
  destinationRegistrationId: registrationId, content: b64(c.serialize()),
});
const send = (destination, c, deviceId, registrationId) => aliceChat.sendMessage({
  destination, timestamp: Date.now(), contents: [{ deviceId, registrationId, contents: c }], onlineOnly: false,
  urgent: true,
});

if (config.statuses) {
  const s = {};
  const c = await encrypt('not delivered');
  const unknown = S.Aci.fromUuid(randomUUID());
  s[404] = {
    typed: await errorOf(() => send(unknown, c, 1, bobReg)),
    raw: await raw(aliceChat, `/v1/messages/${unknown.getServiceIdString()}`, [wire(c, 1, bobReg)]),
  };
  s[409] = {
    typed: await errorOf(() => send(bobId, c, 2, 77)),
    raw: await raw(aliceChat, `/v1/messages/${bob.aci}`, [wire(c, 2, 77)]),
  };
  const stale = (bobReg % 16380) + 1;
  s[410] = {
    typed: await errorOf(() => send(bobId, c, 1, stale)),
    raw: await raw(aliceChat, `/v1/messages/${bob.aci}`, [wire(c, 1, stale)]),
  };
  const big = await encrypt('x'.repeat(300 * 1024));
  s[413] = {
    contentBytes: big.serialize().length,
    typed: await errorOf(() => send(bobId, big, 1, bobReg)),
    raw: await raw(aliceChat, `/v1/messages/${bob.aci}`, [wire(big, 1, bobReg)]),
  };
  // Sealed sends run on the unauthenticated connection; Bob has no access key, so no key opens his queue, and an
  // unknown account answers the same 401 (no existence oracle).
  const anon = await withTimeout(aliceNet.connectUnauthenticatedChat({ onConnectionInterrupted() {} }), 30000,
    'unauthenticated connection');
  const sealed = (destination) => anon.sendMessage({
    destination, timestamp: Date.now(), contents: [{ deviceId: 1, registrationId: bobReg, contents: enc('sealed') }],
    auth: { accessKey: new Uint8Array(16) }, onlineOnly: false, urgent: true,
  });
  const sealedWire = [{ type: 6, destinationDeviceId: 1, destinationRegistrationId: bobReg, content: b64(enc('sealed')) }];
  const zeroKey = [['unidentified-access-key', b64(new Uint8Array(16))]];
  s[401] = {
    typed: await errorOf(() => sealed(bobId)),
    typedUnknown: await errorOf(() => sealed(unknown)),
    raw: await raw(anon, `/v1/messages/${bob.aci}`, sealedWire, zeroKey),
    rawUnknown: await raw(anon, `/v1/messages/${unknown.getServiceIdString()}`, sealedWire, zeroKey),
  };
  await anon.disconnect();
  // The `messages` limiter (Alice → Bob): sends succeed until the bucket is empty.
  let sent = 0;
  let limited = { code: 'sent' };
  for (; sent < 200; sent++) {
    limited = await errorOf(async () => send(bobId, await encrypt(`burst ${sent}`), 1, bobReg));
    if (limited.code !== 'sent') break;
  }
  s[429] = { sentBefore: sent, typed: limited, raw: await raw(aliceChat, `/v1/messages/${bob.aci}`, [wire(c, 1, bobReg)]) };
  out.statuses = s;
  out.steps.push('failing sends');
}

check(aliceRec.interrupted === null, `alice's connection stayed up (${aliceRec.interrupted})`);
await aliceChat.disconnect();
console.log(JSON.stringify(out));
process.exit(0);
