// Shared by the libsignal test scripts: an in-memory libsignal protocol client of one device that talks to a Flatline
// server over REST, the Envelope fields the scripts read, libsignal-net in local-test-server mode, and small helpers.

import { readFileSync } from 'node:fs';
import * as S from '@signalapp/libsignal-client';

export const b64 = (bytes) => Buffer.from(bytes).toString('base64');
export const unb64 = (s) => new Uint8Array(Buffer.from(s, 'base64'));
export const enc = (s) => new Uint8Array(Buffer.from(s, 'utf8'));
export const dec = (bytes) => Buffer.from(bytes).toString('utf8');

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

export class Client {
  // `c`: {aci, password, identityPrivate (std base64), registrationId, deviceId (default 1)}; `base`: the REST URL.
  constructor(name, c, base) {
    this.name = name;
    this.base = base;
    this.aci = c.aci;
    this.deviceId = c.deviceId ?? 1;
    this.password = c.password;
    this.registrationId = c.registrationId;
    const priv = S.PrivateKey.deserialize(unb64(c.identityPrivate));
    this.identity = new S.IdentityKeyPair(priv.getPublicKey(), priv);
    this.address = S.ProtocolAddress.new(this.aci, this.deviceId);
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
    return 'Basic ' + Buffer.from(`${this.aci}.${this.deviceId}:${this.password}`).toString('base64');
  }

  async request(method, path, body, headers = {}) {
    const h = { ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(this.base + path, {
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

  // Fetches the bundles of `aci`'s devices (`device`: an id, or '*' for all) and starts a session with each;
  // returns [{deviceId, registrationId}].
  async startSessions(aci, device = '*') {
    const r = await this.authed('GET', `/v2/keys/${aci}/${device}`);
    check(r.status === 200, `${this.name} fetches ${aci}/${device}: ${r.status}`);
    const out = [];
    for (const d of r.body.devices) {
      const bundle = S.PreKeyBundle.new(
        d.registrationId, d.deviceId,
        d.preKey ? d.preKey.keyId : null, d.preKey ? S.PublicKey.deserialize(unb64(d.preKey.publicKey)) : null,
        d.signedPreKey.keyId, S.PublicKey.deserialize(unb64(d.signedPreKey.publicKey)), unb64(d.signedPreKey.signature),
        S.PublicKey.deserialize(unb64(r.body.identityKey)),
        d.pqPreKey.keyId, S.KEMPublicKey.deserialize(unb64(d.pqPreKey.publicKey)), unb64(d.pqPreKey.signature),
      );
      await S.processPreKeyBundle(bundle, S.ProtocolAddress.new(aci, d.deviceId), this.address, this.sessionStore,
        this.identityStore);
      out.push({ deviceId: d.deviceId, registrationId: d.registrationId });
    }
    return out;
  }

  // Encrypts `text` for each of `devices` ([{deviceId, registrationId}]) of `aci` and sends them in one PUT.
  async sendToDevices(aci, devices, text) {
    const messages = [];
    for (const d of devices) {
      const c = await S.signalEncrypt(enc(text), S.ProtocolAddress.new(aci, d.deviceId), this.address,
        this.sessionStore, this.identityStore);
      messages.push({
        type: c.type() === S.CiphertextMessageType.PreKey ? 3 : 1,
        destinationDeviceId: d.deviceId,
        destinationRegistrationId: d.registrationId,
        content: b64(c.serialize()),
      });
    }
    return this.authed('PUT', `/v1/messages/${aci}`, { messages, online: false, urgent: true, timestamp: Date.now() });
  }

  // Decrypts a PreKey (3) or Whisper (1) message from (`aci`, `deviceId`).
  async decryptFrom(type, content, aci, deviceId) {
    const from = S.ProtocolAddress.new(aci, deviceId);
    if (type === 3) {
      return dec(await S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(content), from, this.address,
        this.sessionStore, this.identityStore, this.preKeyStore, this.signedPreKeyStore, this.kyberPreKeyStore));
    }
    check(type === 1, `unexpected type ${type}`);
    return dec(await S.signalDecrypt(S.SignalMessage.deserialize(content), from, this.address, this.sessionStore,
      this.identityStore));
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

// The fields of a serialized Envelope this client reads (protobuf: 1 type, 8 content, 9 serverGuid, 11
// sourceServiceId).
export function parseEnvelope(bytes) {
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

export const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)),
  ]);
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


// libsignal-net against the server's TLS listener (`chat`: {port, rootCertificate: DER file path}).
export function localNet(chat) {
  return new S.Net.Net({
    localTestServer: true,
    userAgent: 'flatline-test',
    TESTING_localServer_chatPort: chat.port,
    TESTING_localServer_cdsiPort: chat.port,
    TESTING_localServer_svr2Port: chat.port,
    TESTING_localServer_svrBPort: chat.port,
    TESTING_localServer_rootCertificateDer: new Uint8Array(readFileSync(chat.rootCertificate)),
    TESTING_localServer_httpVersion: 1,
  });
}
