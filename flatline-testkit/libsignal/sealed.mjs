// Sealed-sender test client: real libsignal (npm @signalapp/libsignal-client) parties that validate Flatline's
// sender certificates, seal messages (SSv1 and the SSv2 multi-recipient SentMessage) and open them.
//
// Protocol: one JSON request per stdin line, one JSON answer per stdout line, in order.
// Answers are {"ok": true, ...} or {"ok": false, "error": "<message>"}. Byte strings are standard base64.
//
//   {"op":"party","name":"bob","aci":"<uuid>","devices":[{"id":1,"registrationId":4321}, ...],
//    "identityPrivateKey"?: b64}
//       -> {"identityKey"}            a party: one identity key (given or new), per-device stores and prekeys
//                                     (Kyber included)
//   {"op":"validate","certificate","trustRoots":[b64...],"time":ms}
//       -> {"valid","senderUuid","senderDevice","senderE164","expiration","identityKey","signerId"}
//   {"op":"issue","name":"alice","keyId":7,"expiration":ms}
//       -> {"certificate","trustRoot"}   a chain made by libsignal itself, for test data
//   {"op":"seal","from":"alice","certificate","to":"bob","device":1,"plaintext"}
//       -> {"message"}                SSv1 (sealedSenderEncryptMessage), a session made from the recipient's bundle
//   {"op":"sealUsmc","from":"alice","certificate","to":"bob","device":1,"plaintext"}
//       -> {"message"}                SSv1 through UnidentifiedSenderMessageContent + sealedSenderEncrypt
//   {"op":"open","name":"bob","device":1,"message","trustRoot","time":ms}
//       -> {"plaintext","senderUuid","senderDevice"}   sealedSenderDecryptMessage (validates the certificate)
//   {"op":"multi","from":"alice","certificate","recipients":[{"name","device"}...],"excluded":[uuid...],"plaintext"}
//       -> {"message","contents","parsed"}   SSv2 SentMessage (sealedSenderMultiRecipientEncrypt over a group
//                                             message); `parsed` is libsignal's own server-side parse of it
//   {"op":"openUsmc","name":"bob","device":1,"message","trustRoot","time":ms}
//       -> {"contents","msgType","senderUuid","senderDevice","certificateValid"}   sealedSenderDecryptToUsmc
import * as readline from 'node:readline';
import { randomUUID } from 'node:crypto';
import * as S from '@signalapp/libsignal-client';
import SealedSenderMultiRecipientMessage from '@signalapp/libsignal-client/dist/SealedSenderMultiRecipientMessage.js';

const b64 = (u8) => Buffer.from(u8).toString('base64');
const bytes = (s) => new Uint8Array(Buffer.from(s, 'base64'));

class Sessions extends S.SessionStore {
  m = new Map();
  async saveSession(a, r) { this.m.set(a.toString(), r.serialize()); }
  async getSession(a) { const s = this.m.get(a.toString()); return s ? S.SessionRecord.deserialize(s) : null; }
  async getExistingSessions(as) { return Promise.all(as.map(async (a) => { const s = await this.getSession(a); if (!s) throw new Error(`no session for ${a}`); return s; })); }
}
class Identities extends S.IdentityKeyStore {
  m = new Map();
  constructor(pair, regId) { super(); this.pair = pair; this.regId = regId; }
  async getIdentityKey() { return this.pair.privateKey; }
  async getLocalRegistrationId() { return this.regId; }
  async saveIdentity(a, k) {
    const old = this.m.get(a.toString());
    this.m.set(a.toString(), k.serialize());
    return old && Buffer.compare(Buffer.from(old), Buffer.from(k.serialize())) !== 0 ? S.IdentityChange.ReplacedExisting : S.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity() { return true; }
  async getIdentity(a) { const k = this.m.get(a.toString()); return k ? S.PublicKey.deserialize(k) : null; }
}
class Records {
  m = new Map();
  constructor(kind) { this.kind = kind; }
  save(id, r) { this.m.set(id, r.serialize()); }
  get(id) { const r = this.m.get(id); if (!r) throw new Error(`no ${this.kind.name} ${id}`); return this.kind.deserialize(r); }
}
class PreKeys extends S.PreKeyStore {
  r = new Records(S.PreKeyRecord);
  async savePreKey(id, rec) { this.r.save(id, rec); }
  async getPreKey(id) { return this.r.get(id); }
  async removePreKey(id) { this.r.m.delete(id); }
}
class SignedPreKeys extends S.SignedPreKeyStore {
  r = new Records(S.SignedPreKeyRecord);
  async saveSignedPreKey(id, rec) { this.r.save(id, rec); }
  async getSignedPreKey(id) { return this.r.get(id); }
}
class KyberPreKeys extends S.KyberPreKeyStore {
  r = new Records(S.KyberPreKeyRecord);
  used = [];
  async saveKyberPreKey(id, rec) { this.r.save(id, rec); }
  async getKyberPreKey(id) { return this.r.get(id); }
  async markKyberPreKeyUsed(id) { this.used.push(id); }
}
class SenderKeys extends S.SenderKeyStore {
  m = new Map();
  async saveSenderKey(a, d, r) { this.m.set(`${a}/${d}`, r.serialize()); }
  async getSenderKey(a, d) { const r = this.m.get(`${a}/${d}`); return r ? S.SenderKeyRecord.deserialize(r) : null; }
}

const parties = new Map();

function makeDevice(pair, id, registrationId) {
  const d = {
    id, registrationId,
    sessions: new Sessions(), identities: new Identities(pair, registrationId),
    preKeys: new PreKeys(), signedPreKeys: new SignedPreKeys(), kyberPreKeys: new KyberPreKeys(),
    senderKeys: new SenderKeys(),
  };
  const pre = S.PrivateKey.generate();
  const spk = S.PrivateKey.generate();
  const kyber = S.KEMKeyPair.generate();
  const spkSig = pair.privateKey.sign(spk.getPublicKey().serialize());
  const kyberSig = pair.privateKey.sign(kyber.getPublicKey().serialize());
  d.preKeys.r.save(11, S.PreKeyRecord.new(11, pre.getPublicKey(), pre));
  d.signedPreKeys.r.save(22, S.SignedPreKeyRecord.new(22, Date.now(), spk.getPublicKey(), spk, spkSig));
  d.kyberPreKeys.r.save(33, S.KyberPreKeyRecord.new(33, Date.now(), kyber, kyberSig));
  d.bundle = () => S.PreKeyBundle.new(registrationId, id, 11, pre.getPublicKey(), 22, spk.getPublicKey(), spkSig,
    pair.publicKey, 33, kyber.getPublicKey(), kyberSig);
  return d;
}

function party(name) {
  const p = parties.get(name);
  if (!p) throw new Error(`unknown party ${name}`);
  return p;
}

function device(name, id) {
  const d = party(name).devices.get(id);
  if (!d) throw new Error(`unknown device ${name}.${id}`);
  return d;
}

// The sender's own (first) device: the stores it seals with.
function senderDevice(p) { return p.devices.values().next().value; }

async function ensureSession(from, toName, toDevice) {
  const s = senderDevice(from);
  const to = party(toName);
  const addr = S.ProtocolAddress.new(to.aci, toDevice);
  if (!(await s.sessions.getSession(addr))) {
    await S.processPreKeyBundle(device(toName, toDevice).bundle(), addr, S.ProtocolAddress.new(from.aci, s.id),
      s.sessions, s.identities);
  }
  return addr;
}

const ops = {
  party({ name, aci, devices, identityPrivateKey }) {
    let pair = S.IdentityKeyPair.generate();
    if (identityPrivateKey) {
      const priv = S.PrivateKey.deserialize(bytes(identityPrivateKey));
      pair = new S.IdentityKeyPair(priv.getPublicKey(), priv);
    }
    const p = { name, aci, pair, devices: new Map() };
    for (const { id, registrationId } of devices) p.devices.set(id, makeDevice(pair, id, registrationId));
    parties.set(name, p);
    return { identityKey: b64(pair.publicKey.serialize()) };
  },

  validate({ certificate, trustRoots, time }) {
    const c = S.SenderCertificate.deserialize(bytes(certificate));
    return {
      valid: c.validateWithTrustRoots(trustRoots.map((r) => S.PublicKey.deserialize(bytes(r))), time),
      senderUuid: c.senderUuid(),
      senderDevice: c.senderDeviceId(),
      senderE164: c.senderE164(),
      expiration: c.expiration(),
      identityKey: b64(c.key().serialize()),
      signerId: c.serverCertificate().keyId(),
    };
  },

  // A certificate chain made by libsignal itself (for test data): a fresh trust root, server certificate `keyId`,
  // and a sender certificate for party `name`'s first device.
  issue({ name, keyId, expiration }) {
    const p = party(name);
    const root = S.PrivateKey.generate();
    const serverKey = S.PrivateKey.generate();
    const server = S.ServerCertificate.new(keyId, serverKey.getPublicKey(), root);
    const cert = S.SenderCertificate.new(p.aci, null, senderDevice(p).id, p.pair.publicKey, expiration, server,
      serverKey);
    return { certificate: b64(cert.serialize()), trustRoot: b64(root.getPublicKey().serialize()) };
  },

  async seal({ from, certificate, to, device: toDevice, plaintext }) {
    const f = party(from);
    const addr = await ensureSession(f, to, toDevice);
    const s = senderDevice(f);
    const cert = S.SenderCertificate.deserialize(bytes(certificate));
    const message = await S.sealedSenderEncryptMessage(bytes(plaintext), addr, cert, s.sessions, s.identities);
    return { message: b64(message) };
  },

  async sealUsmc({ from, certificate, to, device: toDevice, plaintext }) {
    const f = party(from);
    const addr = await ensureSession(f, to, toDevice);
    const s = senderDevice(f);
    const cert = S.SenderCertificate.deserialize(bytes(certificate));
    const ciphertext = await S.signalEncrypt(bytes(plaintext), addr, S.ProtocolAddress.new(f.aci, s.id), s.sessions,
      s.identities);
    const usmc = S.UnidentifiedSenderMessageContent.new(ciphertext, cert, 1, null);
    return { message: b64(await S.sealedSenderEncrypt(usmc, addr, s.identities)) };
  },

  async open({ name, device: id, message, trustRoot, time }) {
    const p = party(name);
    const d = device(name, id);
    const r = await S.sealedSenderDecryptMessage(bytes(message), S.PublicKey.deserialize(bytes(trustRoot)), time,
      null, p.aci, id, d.sessions, d.identities, d.preKeys, d.signedPreKeys, d.kyberPreKeys);
    return { plaintext: b64(r.message()), senderUuid: r.senderUuid(), senderDevice: r.deviceId() };
  },

  async multi({ from, certificate, recipients, excluded, plaintext }) {
    const f = party(from);
    const s = senderDevice(f);
    const addrs = [];
    for (const { name, device: id } of recipients) addrs.push(await ensureSession(f, name, id));
    const cert = S.SenderCertificate.deserialize(bytes(certificate));
    const distributionId = randomUUID();
    const self = S.ProtocolAddress.new(f.aci, s.id);
    await S.SenderKeyDistributionMessage.create(self, distributionId, s.senderKeys);
    const ciphertext = await S.groupEncrypt(self, distributionId, s.senderKeys, bytes(plaintext));
    const usmc = S.UnidentifiedSenderMessageContent.new(ciphertext, cert, 1, new Uint8Array([1, 2, 3]));
    const message = await S.sealedSenderMultiRecipientEncrypt({
      content: usmc,
      recipients: addrs,
      excludedRecipients: (excluded ?? []).map((u) => S.Aci.fromUuid(u)),
      identityStore: s.identities,
      sessionStore: s.sessions,
    });
    const parsed = new SealedSenderMultiRecipientMessage(message);
    return {
      message: b64(message),
      contents: b64(ciphertext.serialize()),
      parsed: {
        recipients: parsed.recipientsByServiceIdString(),
        excluded: parsed.excludedRecipientServiceIdStrings(),
        payloads: Object.fromEntries(Object.keys(parsed.recipientsByServiceIdString()).map((sid) => [
          sid, b64(parsed.messageForRecipient(parsed.recipientsByServiceIdString()[sid])),
        ])),
      },
    };
  },

  async openUsmc({ name, device: id, message, trustRoot, time }) {
    const d = device(name, id);
    const usmc = await S.sealedSenderDecryptToUsmc(bytes(message), d.identities);
    const cert = usmc.senderCertificate();
    return {
      contents: b64(usmc.contents()),
      msgType: usmc.msgType(),
      senderUuid: cert.senderUuid(),
      senderDevice: cert.senderDeviceId(),
      certificateValid: cert.validate(S.PublicKey.deserialize(bytes(trustRoot)), time),
    };
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
  if (!line.trim()) continue;
  let answer;
  try {
    const req = JSON.parse(line);
    const op = ops[req.op];
    if (!op) throw new Error(`unknown op ${req.op}`);
    answer = { ok: true, ...(await op(req)) };
  } catch (e) {
    answer = { ok: false, error: String(e?.message ?? e) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
