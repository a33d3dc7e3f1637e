// Two real libsignal clients message each other through a running Flatline server over its REST API:
// prekey upload, bundle fetch, PQXDH session, PreKey and Whisper messages sent with PUT /v1/messages/{aci},
// fetched with GET /v1/messages, decrypted and acknowledged; then a sealed-sender message sent with the
// recipient's real unidentified-access key (derived from a profile key) and decrypted. With "chat" in the config,
// first a PreKey message is pushed to Bob's libsignal-net AuthenticatedChatConnection (onIncomingMessage),
// decrypted with signalDecryptPreKey and acknowledged with ack.send(200), after which it is gone from the queue.
//
// Usage: node messages.mjs <config.json>, where the file holds
//   {"base": "http://127.0.0.1:PORT",
//    "alice": {"aci", "password", "identityPrivate" (std base64, 32 bytes), "registrationId"},
//    "bob":   {...same...},
//    "chat":  {"port": TLS port of the same server, "rootCertificate": path of its root certificate (DER)}}  (optional)
// Prints one JSON line {"ok": true, "steps": [...]} and exits 0, or prints the failure to stderr and exits 1.

import { readFileSync } from 'node:fs';
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';
import { Client, b64, check, dec, enc, localNet, parseEnvelope, sleep, unb64, withTimeout } from './signal_client.mjs';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const steps = [];

const alice = new Client('alice', config.alice, config.base);
const bob = new Client('bob', config.bob, config.base);
await alice.uploadKeys();
await bob.uploadKeys();
steps.push('keys uploaded');

let bobReg;
if (config.chat) {
  // Bob is online with libsignal-net: Alice's PreKey message is pushed to him over the socket.
  const net = localNet(config.chat);
  let queueEmpty;
  const queueEmptySeen = new Promise((resolve) => { queueEmpty = resolve; });
  let incoming;
  const incomingSeen = new Promise((resolve) => { incoming = resolve; });
  const listener = {
    onIncomingMessage(envelope, timestamp, ack) { incoming({ envelope, timestamp, ack }); },
    onQueueEmpty() { queueEmpty(true); },
    onConnectionInterrupted() {},
  };
  const chat = await withTimeout(
    net.connectAuthenticatedChat(`${bob.aci}.1`, bob.password, false, listener), 30000, 'bob connects');
  await withTimeout(queueEmptySeen, 30000, 'queue empty on connect');
  bobReg = await alice.startSession(bob);
  check((await alice.sendTo(bob, bobReg, 'hello bob over the socket')) === 3, 'a PreKey message');
  const pushed = await withTimeout(incomingSeen, 30000, 'the pushed message');
  const e = parseEnvelope(pushed.envelope);
  check(e.type === 3 && e.sourceServiceId === alice.aci, `pushed envelope ${JSON.stringify({ ...e, content: null })}`);
  check(typeof pushed.timestamp === 'number' && pushed.timestamp > 0, 'delivery timestamp from X-Signal-Timestamp');
  const text = dec(await S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(e.content), alice.address,
    bob.address, bob.sessionStore, bob.identityStore, bob.preKeyStore, bob.signedPreKeyStore, bob.kyberPreKeyStore));
  check(text === 'hello bob over the socket', 'bob decrypts the pushed message');
  pushed.ack.send(200);
  let left = -1;
  for (let n = 0; n < 100; n++) {
    left = (await bob.fetchAll()).length;
    if (left === 0) break;
    await sleep(50);
  }
  check(left === 0, `the acknowledged message is gone from the queue (${left} left)`);
  await chat.disconnect();
  steps.push('prekey message pushed over libsignal-net, decrypted and acknowledged');
}

// Alice starts a PQXDH session from Bob's fetched bundle (unless the socket step did) and sends a PreKey message
// (still one until Bob answers).
if (bobReg === undefined) bobReg = await alice.startSession(bob);
check((await alice.sendTo(bob, bobReg, 'hello bob')) === 3, 'first message is a PreKey message');
let inbox = await bob.fetchAll();
check(inbox.length === 1, `bob has one message, got ${inbox.length}`);
check(inbox[0].sourceUuid === alice.aci && inbox[0].sourceDevice === 1, 'identified source');
check(inbox[0].destinationUuid === bob.aci, 'destination');
check((await bob.decrypt(inbox[0], alice)) === 'hello bob', 'bob decrypts');
await bob.ack(inbox[0]);
check((await bob.fetchAll()).length === 0, 'acknowledged message gone');
steps.push('prekey message delivered and decrypted');

// Bob answers on the established session: a Whisper message (envelope type 1).
check((await bob.sendTo(alice, config.alice.registrationId, 'hello alice')) === 1, 'reply is a Whisper message');
inbox = await alice.fetchAll();
const receipt = inbox.find((m) => m.type === 5);
check(receipt && receipt.sourceUuid === bob.aci && receipt.content === null, 'alice has a delivery receipt');
const reply = inbox.find((m) => m.type === 1);
check(reply && (await alice.decrypt(reply, bob)) === 'hello alice', 'alice decrypts the reply');
for (const m of inbox) await alice.ack(m);
steps.push('whisper reply and delivery receipt');

// Sealed sender with Bob's real access key, derived from his profile key and set in his attributes.
const profileKey = new Z.ProfileKey(new Uint8Array(Buffer.alloc(32, 0x42)));
const accessKey = profileKey.deriveAccessKey();
let r = await bob.authed('PUT', '/v1/accounts/attributes', {
  fetchesMessages: true, registrationId: config.bob.registrationId, pniRegistrationId: 12,
  unidentifiedAccessKey: b64(accessKey), unrestrictedUnidentifiedAccess: false,
});
check(r.status === 204, `bob sets his attributes: ${r.status} ${JSON.stringify(r.body)}`);
const trustRoot = S.PrivateKey.generate();
const serverKey = S.PrivateKey.generate();
const serverCert = S.ServerCertificate.new(1, serverKey.getPublicKey(), trustRoot);
const expires = Date.now() + 365 * 86400 * 1000;
const senderCert = S.SenderCertificate.new(alice.aci, null, 1, alice.identity.publicKey, expires, serverCert, serverKey);
const sealed = await S.sealedSenderEncryptMessage(enc('sealed hello'), bob.address, senderCert,
  alice.sessionStore, alice.identityStore);
const sealedBody = {
  messages: [{ type: 6, destinationDeviceId: 1, destinationRegistrationId: bobReg, content: b64(sealed) }],
  online: false, urgent: true, timestamp: Date.now(),
};
r = await alice.request('PUT', `/v1/messages/${bob.aci}`, sealedBody,
  { 'unidentified-access-key': b64(new Uint8Array(16)) });
check(r.status === 401, `a wrong access key is 401, got ${r.status}`);
r = await alice.request('PUT', `/v1/messages/${bob.aci}`, sealedBody, { 'unidentified-access-key': b64(accessKey) });
check(r.status === 200, `sealed send: ${r.status} ${JSON.stringify(r.body)}`);
inbox = await bob.fetchAll();
// Bob also holds the delivery receipt of his reply, queued when Alice acknowledged it.
check(inbox.length === 2 && inbox[0].type === 5 && inbox[0].sourceUuid === alice.aci, 'bob has his receipt first');
const sealedIn = inbox[1];
check(sealedIn.type === 6 && sealedIn.sourceUuid === null, 'a sealed envelope without source');
const opened = await S.sealedSenderDecryptMessage(unb64(sealedIn.content), trustRoot.getPublicKey(),
  sealedIn.serverTimestamp, null, bob.aci, 1, bob.sessionStore, bob.identityStore, bob.preKeyStore,
  bob.signedPreKeyStore, bob.kyberPreKeyStore);
check(dec(opened.message()) === 'sealed hello', 'bob opens the sealed message');
check(opened.senderUuid() === alice.aci && opened.deviceId() === 1, 'sealed sender is alice');
for (const m of inbox) await bob.ack(m);
check((await alice.fetchAll()).length === 0, 'no receipt for a sealed message');
steps.push('sealed sender with the access key');

console.log(JSON.stringify({ ok: true, steps }));
