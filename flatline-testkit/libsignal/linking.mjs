// A second device joins Alice's account through a running Flatline server with real libsignal: the new device opens
// libsignal-net's provisioning connection (connectProvisioning) and receives its address; Alice's primary takes a
// link token and relays an envelope to that address (PUT /v1/provisioning/{address}); the new device receives the
// exact bytes, links (PUT /v1/devices/link, keys signed with the account's identity keys carried in the envelope),
// uploads one-time keys and connects its authenticated chat. Then Bob's send naming only device 1 is 409
// missingDevices [2]; to both devices, both decrypt (device 1 over REST, device 2 pushed over libsignal-net); a sync
// message from device 1 to its own account reaches device 2 only; removing device 2 interrupts its chat connection.
//
// The envelope's body is not encrypted here: the provisioning cipher (ECDH + AES-CBC + HMAC, in the clients) is
// opaque to the server, and what matters to it is that the bytes arrive unchanged.
//
// Usage: node linking.mjs <config.json>, where the file holds
//   {"base": "http://127.0.0.1:PORT", "chat": {"port": TLS port, "rootCertificate": DER file path},
//    "alice": {"aci", "password", "identityPrivate", "pniIdentityPrivate", "registrationId"},
//    "bob":   {"aci", "password", "identityPrivate", "registrationId"}}
// Prints one JSON line {"ok": true, "steps": [...], ...observations} and exits 0, or prints the failure and exits 1.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as S from '@signalapp/libsignal-client';
import { Client, b64, check, dec, enc, localNet, parseEnvelope, sleep, unb64, withTimeout } from './signal_client.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const steps = [];
const out = { ok: true, steps };
const net = localNet(config.chat);

const alice = new Client('alice', config.alice, config.base);
const bob = new Client('bob', config.bob, config.base);
await alice.uploadKeys();
await bob.uploadKeys();

// --- The new device: a provisioning connection ---
let gotAddress;
const addressSeen = new Promise((resolve) => { gotAddress = resolve; });
let gotEnvelope;
const envelopeSeen = new Promise((resolve) => { gotEnvelope = resolve; });
let provisioningClosed;
const provisioningClosedSeen = new Promise((resolve) => { provisioningClosed = resolve; });
const provisioning = await withTimeout(net.connectProvisioning({
  onReceivedAddress(address, ack) { ack.send(200); gotAddress(address); },
  onReceivedEnvelope(envelope, ack) { ack.send(200); gotEnvelope(envelope); },
  onConnectionInterrupted(cause) { provisioningClosed(cause ? cause.code ?? String(cause) : null); },
}), 30000, 'connectProvisioning');
const address = await withTimeout(addressSeen, 30000, 'the provisioning address');
steps.push('provisioning address received');

// --- The primary: a link token, and the envelope relayed to the address ---
let r = await alice.authed('GET', '/v1/devices/provisioning/code');
check(r.status === 200, `link token: ${r.status}`);
const token = r.body.verificationCode;
const tokenIdentifier = r.body.tokenIdentifier;
const body = enc(JSON.stringify({
  provisioningCode: token,
  aci: config.alice.aci,
  aciIdentityPrivate: config.alice.identityPrivate,
  pniIdentityPrivate: config.alice.pniIdentityPrivate,
}));
const publicKey = S.PrivateKey.generate().getPublicKey().serialize();
// ProvisionEnvelope { bytes publicKey = 1; bytes body = 2; }
const lenPrefix = (n) => (n < 128 ? [n] : [(n & 0x7f) | 0x80, n >> 7]);
const envelope = new Uint8Array([
  0x0a, ...lenPrefix(publicKey.length), ...publicKey,
  0x12, ...lenPrefix(body.length), ...body,
]);
r = await alice.authed('PUT', `/v1/provisioning/${encodeURIComponent(address)}`, { body: b64(envelope) });
check(r.status === 204, `relay: ${r.status} ${JSON.stringify(r.body)}`);
const received = await withTimeout(envelopeSeen, 30000, 'the relayed envelope');
check(Buffer.from(received).equals(Buffer.from(envelope)), 'the new device receives the exact bytes');
out.provisioningClose = await withTimeout(provisioningClosedSeen, 30000, 'the provisioning socket closes');
await provisioning.disconnect().catch(() => {});
steps.push('envelope relayed byte for byte');

// --- The new device links with what the envelope carried ---
const carried = JSON.parse(dec(received.subarray(3 + publicKey.length + lenPrefix(body.length).length)));
const password = b64(randomBytes(18));
const device2 = new Client('alice.2', {
  aci: carried.aci, password, identityPrivate: carried.aciIdentityPrivate, registrationId: 222, deviceId: 2,
}, config.base);
const pniIdentity = S.PrivateKey.deserialize(unb64(carried.pniIdentityPrivate));
const signedKey = async (identityKey, id, store) => {
  const k = S.PrivateKey.generate();
  const sig = identityKey.sign(k.getPublicKey().serialize());
  if (store) await device2.signedPreKeyStore.saveSignedPreKey(id, S.SignedPreKeyRecord.new(id, Date.now(), k.getPublicKey(), k, sig));
  return { keyId: id, publicKey: b64(k.getPublicKey().serialize()), signature: b64(sig) };
};
const lastResort = async (identityKey, id, store) => {
  const k = S.KEMKeyPair.generate();
  const sig = identityKey.sign(k.getPublicKey().serialize());
  if (store) await device2.kyberPreKeyStore.saveKyberPreKey(id, S.KyberPreKeyRecord.new(id, Date.now(), k, sig));
  return { keyId: id, publicKey: b64(k.getPublicKey().serialize()), signature: b64(sig) };
};
const linkBody = {
  verificationCode: carried.provisioningCode,
  accountAttributes: { fetchesMessages: true, registrationId: 222, pniRegistrationId: 223, capabilities: {} },
  aciSignedPreKey: await signedKey(device2.identity.privateKey, 1, true),
  pniSignedPreKey: await signedKey(pniIdentity, 1, false),
  aciPqLastResortPreKey: await lastResort(device2.identity.privateKey, 2, true),
  pniPqLastResortPreKey: await lastResort(pniIdentity, 2, false),
};
r = await device2.request('PUT', '/v1/devices/link', linkBody,
  { authorization: 'Basic ' + Buffer.from(`${carried.aci}:${password}`).toString('base64') });
check(r.status === 200 && r.body.deviceId === 2, `link: ${r.status} ${JSON.stringify(r.body)}`);
r = await alice.authed('GET', `/v1/devices/wait_for_linked_device/${tokenIdentifier}?timeout=5`);
check(r.status === 200 && r.body.id === 2, `the primary learns of the link: ${r.status}`);
await device2.uploadKeys();
steps.push('linked as device 2 and keys uploaded');

// --- Device 2 online with libsignal-net ---
const pushed = [];
let wake = () => {};
const chat = await withTimeout(net.connectAuthenticatedChat(`${carried.aci}.2`, password, false, {
  onIncomingMessage(envelopeBytes, _timestamp, ack) { pushed.push({ e: parseEnvelope(envelopeBytes), ack }); wake(); },
  onQueueEmpty() {},
  onConnectionInterrupted(cause) { out.device2Interrupted = cause ? cause.code ?? String(cause) : null; wake(); },
}), 30000, 'device 2 connects');
const nextPush = async (what) => {
  for (let i = 0; i < 300 && pushed.length === 0; i++) {
    await Promise.race([new Promise((resolve) => { wake = resolve; }), sleep(100)]);
  }
  check(pushed.length > 0, `a push: ${what}`);
  return pushed.shift();
};
steps.push('device 2 connected');

// --- Bob must name every device ---
const one = await bob.startSessions(carried.aci, 1);
r = await bob.sendToDevices(carried.aci, one, 'to device 1 only');
check(r.status === 409, `a send naming only device 1: ${r.status}`);
out.missing = r.body;
const both = await bob.startSessions(carried.aci, '*');
check(both.length === 2, `two bundles: ${JSON.stringify(both)}`);
r = await bob.sendToDevices(carried.aci, both, 'hello both');
check(r.status === 200, `send to both: ${r.status} ${JSON.stringify(r.body)}`);
const inbox = await alice.fetchAll();
check(inbox.length === 1, `device 1 has one message, got ${inbox.length}`);
check((await alice.decryptFrom(inbox[0].type, unb64(inbox[0].content), bob.aci, 1)) === 'hello both', 'device 1 decrypts');
await alice.ack(inbox[0]);
const p = await nextPush('bob → device 2');
check(p.e.sourceServiceId === bob.aci, 'from bob');
check((await device2.decryptFrom(p.e.type, p.e.content, bob.aci, 1)) === 'hello both', 'device 2 decrypts');
p.ack.send(200);
steps.push('bob reaches both devices');

// --- A sync message from device 1 reaches device 2 only ---
const own = await alice.startSessions(carried.aci, 2);
r = await alice.sendToDevices(carried.aci, own, 'sync to my other device');
check(r.status === 200, `sync send: ${r.status} ${JSON.stringify(r.body)}`);
out.syncNeedsSync = r.body.needsSync;
const s = await nextPush('the sync message');
check(s.e.sourceServiceId === carried.aci, 'from alice herself');
check((await device2.decryptFrom(s.e.type, s.e.content, carried.aci, 1)) === 'sync to my other device', 'device 2 decrypts the sync');
s.ack.send(200);
await sleep(200);
check((await alice.fetchAll()).filter((m) => m.type !== 5).length === 0, 'device 1 got no copy of its own sync');
steps.push('sync reaches device 2 only');

// --- Removing device 2 ---
r = await alice.authed('DELETE', '/v1/devices/2');
check(r.status === 204, `remove: ${r.status}`);
for (let i = 0; i < 100 && out.device2Interrupted === undefined; i++) await sleep(100);
r = await bob.authed('GET', `/v2/keys/${carried.aci}/2`);
out.keysAfterRemoval = r.status;
await chat.disconnect().catch(() => {});
steps.push('device 2 removed');

console.log(JSON.stringify(out));
