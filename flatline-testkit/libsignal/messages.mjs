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

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const steps = [];
const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
const enc = (s) => new Uint8Array(Buffer.from(s, 'utf8'));
const dec = (bytes) => Buffer.from(bytes).toString('utf8');

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

class Client {
  constructor(name, c) {
    this.name = name;
    this.aci = c.aci;
    this.password = c.password;
    this.registrationId = c.registrationId;
    const priv = S.PrivateKey.deserialize(unb64(c.identityPrivate));
    this.identity = new S.IdentityKeyPair(priv.getPublicKey(), priv);
    this.address = S.ProtocolAddress.new(this.aci, 1);
    this.sessions = new Map();
    this.identities = new Map();
    this.preKeys = new Map();
    this.signedPreKeys = new Map();
    this.kyberPreKeys = new Map();
    const self = this;
    this.sessionStore = new (class extends S.SessionStore {
      async saveSession(a, r) { self.sessions.set(a.toString(), r.serialize()); }
      async getSession(a) {
        const r = self.sessions.get(a.toString());
        return r ? S.SessionRecord.deserialize(r) : null;
      }
      async getExistingSessions(as) { return Promise.all(as.map((a) => this.getSession(a))); }
    })();
    this.identityStore = new (class extends S.IdentityKeyStore {
      async getIdentityKey() { return self.identity.privateKey; }
      async getLocalRegistrationId() { return self.registrationId; }
      async saveIdentity(a, key) {
        const old = self.identities.get(a.name());
        self.identities.set(a.name(), key.serialize());
        return old && !Buffer.from(old).equals(Buffer.from(key.serialize()))
          ? S.IdentityChange.ReplacedExisting : S.IdentityChange.NewOrUnchanged;
      }
      async isTrustedIdentity() { return true; }
      async getIdentity(a) {
        const k = self.identities.get(a.name());
        return k ? S.PublicKey.deserialize(k) : null;
      }
    })();
    this.preKeyStore = new (class extends S.PreKeyStore {
      async savePreKey(id, r) { self.preKeys.set(id, r.serialize()); }
      async getPreKey(id) { return S.PreKeyRecord.deserialize(self.preKeys.get(id)); }
      async removePreKey(id) { self.preKeys.delete(id); }
    })();
    this.signedPreKeyStore = new (class extends S.SignedPreKeyStore {
      async saveSignedPreKey(id, r) { self.signedPreKeys.set(id, r.serialize()); }
      async getSignedPreKey(id) { return S.SignedPreKeyRecord.deserialize(self.signedPreKeys.get(id)); }
    })();
    this.kyberPreKeyStore = new (class extends S.KyberPreKeyStore {
      async saveKyberPreKey(id, r) { self.kyberPreKeys.set(id, r.serialize()); }
      async getKyberPreKey(id) { return S.KyberPreKeyRecord.deserialize(self.kyberPreKeys.get(id)); }
      async markKyberPreKeyUsed() {}
    })();
  }

  auth() {
    return 'Basic ' + Buffer.from(`${this.aci}.1:${this.password}`).toString('base64');
  }

  async request(method, path, body, headers = {}) {
    const h = { ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(config.base + path, {
      method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  async authed(method, path, body) {
    return this.request(method, path, body, { authorization: this.auth() });
  }

  async uploadKeys() {
    const sign = (bytes) => this.identity.privateKey.sign(bytes);
    const oneTime = S.PrivateKey.generate();
    await this.preKeyStore.savePreKey(7, S.PreKeyRecord.new(7, oneTime.getPublicKey(), oneTime));
    const signed = S.PrivateKey.generate();
    const signedSig = sign(signed.getPublicKey().serialize());
    await this.signedPreKeyStore.saveSignedPreKey(8, S.SignedPreKeyRecord.new(8, Date.now(), signed.getPublicKey(), signed, signedSig));
    const kyber = S.KEMKeyPair.generate();
    const kyberSig = sign(kyber.getPublicKey().serialize());
    await this.kyberPreKeyStore.saveKyberPreKey(9, S.KyberPreKeyRecord.new(9, Date.now(), kyber, kyberSig));
    const lastResort = S.KEMKeyPair.generate();
    const lastResortSig = sign(lastResort.getPublicKey().serialize());
    await this.kyberPreKeyStore.saveKyberPreKey(10, S.KyberPreKeyRecord.new(10, Date.now(), lastResort, lastResortSig));
    const r = await this.authed('PUT', '/v2/keys', {
      preKeys: [{ keyId: 7, publicKey: b64(oneTime.getPublicKey().serialize()) }],
      signedPreKey: { keyId: 8, publicKey: b64(signed.getPublicKey().serialize()), signature: b64(signedSig) },
      pqPreKeys: [{ keyId: 9, publicKey: b64(kyber.getPublicKey().serialize()), signature: b64(kyberSig) }],
      pqLastResortPreKey: { keyId: 10, publicKey: b64(lastResort.getPublicKey().serialize()), signature: b64(lastResortSig) },
    });
    check(r.status === 204, `${this.name} key upload: ${r.status} ${JSON.stringify(r.body)}`);
  }

  async startSession(peer) {
    const r = await this.authed('GET', `/v2/keys/${peer.aci}/1`);
    check(r.status === 200, `${this.name} fetches ${peer.name}'s bundle: ${r.status}`);
    const d = r.body.devices[0];
    const bundle = S.PreKeyBundle.new(
      d.registrationId, d.deviceId,
      d.preKey ? d.preKey.keyId : null, d.preKey ? S.PublicKey.deserialize(unb64(d.preKey.publicKey)) : null,
      d.signedPreKey.keyId, S.PublicKey.deserialize(unb64(d.signedPreKey.publicKey)), unb64(d.signedPreKey.signature),
      S.PublicKey.deserialize(unb64(r.body.identityKey)),
      d.pqPreKey.keyId, S.KEMPublicKey.deserialize(unb64(d.pqPreKey.publicKey)), unb64(d.pqPreKey.signature),
    );
    await S.processPreKeyBundle(bundle, peer.address, this.address, this.sessionStore, this.identityStore);
    return d.registrationId;
  }

  async sendTo(peer, registrationId, text) {
    const c = await S.signalEncrypt(enc(text), peer.address, this.address, this.sessionStore, this.identityStore);
    const type = c.type() === S.CiphertextMessageType.PreKey ? 3 : 1;
    const r = await this.authed('PUT', `/v1/messages/${peer.aci}`, {
      messages: [{ type, destinationDeviceId: 1, destinationRegistrationId: registrationId, content: b64(c.serialize()) }],
      online: false, urgent: true, timestamp: Date.now(),
    });
    check(r.status === 200, `${this.name} sends: ${r.status} ${JSON.stringify(r.body)}`);
    check(r.body.needsSync === false, 'needsSync false for a single-device sender');
    return type;
  }

  async fetchAll() {
    const r = await this.authed('GET', '/v1/messages');
    check(r.status === 200, `${this.name} fetches: ${r.status}`);
    return r.body.messages;
  }

  async ack(m) {
    const r = await this.authed('DELETE', `/v1/messages/uuid/${m.guid}`);
    check(r.status === 204, `${this.name} acks: ${r.status}`);
  }

  async decrypt(m, peer) {
    const content = unb64(m.content);
    if (m.type === 3) {
      return dec(await S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(content), peer.address, this.address,
        this.sessionStore, this.identityStore, this.preKeyStore, this.signedPreKeyStore, this.kyberPreKeyStore));
    }
    check(m.type === 1, `unexpected type ${m.type}`);
    return dec(await S.signalDecrypt(S.SignalMessage.deserialize(content), peer.address, this.address,
      this.sessionStore, this.identityStore));
  }
}

const alice = new Client('alice', config.alice);
const bob = new Client('bob', config.bob);
await alice.uploadKeys();
await bob.uploadKeys();
steps.push('keys uploaded');

// The fields of a serialized Envelope this client reads (protobuf: 1 type, 8 content, 9 serverGuid, 11
// sourceServiceId).
function parseEnvelope(bytes) {
  const out = {};
  let i = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = bytes[i++];
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < bytes.length) {
    const key = Number(varint());
    const field = key >> 3;
    const wire = key & 7;
    if (wire === 0) {
      const v = varint();
      if (field === 1) out.type = Number(v);
    } else if (wire === 2) {
      const len = Number(varint());
      const value = bytes.subarray(i, i + len);
      i += len;
      if (field === 8) out.content = value;
      if (field === 9) out.serverGuid = dec(value);
      if (field === 11) out.sourceServiceId = dec(value);
    } else if (wire === 1) {
      i += 8;
    } else if (wire === 5) {
      i += 4;
    } else {
      throw new Error(`unexpected wire type ${wire}`);
    }
  }
  return out;
}

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)),
  ]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let bobReg;
if (config.chat) {
  // Bob is online with libsignal-net: Alice's PreKey message is pushed to him over the socket.
  const net = new S.Net.Net({
    localTestServer: true,
    userAgent: 'flatline-test',
    TESTING_localServer_chatPort: config.chat.port,
    TESTING_localServer_cdsiPort: config.chat.port,
    TESTING_localServer_svr2Port: config.chat.port,
    TESTING_localServer_svrBPort: config.chat.port,
    TESTING_localServer_rootCertificateDer: new Uint8Array(readFileSync(config.chat.rootCertificate)),
    TESTING_localServer_httpVersion: 1,
  });
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
