// Regenerates flatline-core/testdata/zkgroup_cases.json: 20 deterministic cases per zkgroup
// object, made with npm @signalapp/libsignal-client 0.103.0 (the *WithRandom APIs).
// Usage: node gen_zkgroup_cases.mjs > ../../flatline-core/testdata/zkgroup_cases.json
import { createHash } from 'node:crypto';
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';

const hex = (b) => Buffer.from(b).toString('hex');
const b64 = (b) => Buffer.from(b).toString('base64');
const seed = (label) =>
  new Uint8Array(createHash('sha256').update(`flatline-zk-cases/${label}`).digest());
const uuid = (label) => {
  const h = Buffer.from(seed(label)).subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x40;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
};
const DAY = 86400;
const dayStart = 1767225600;
const N = 20;
const cases = [];
for (let i = 0; i < N; i++) {
  const r = (l) => seed(`${i}/${l}`);
  const ssp = Z.ServerSecretParams.generateWithRandom(r('ssp'));
  const spp = ssp.getPublicParams();
  const msg = new Uint8Array(Buffer.from(`notary message ${i}`.repeat(i + 1)));
  const sig = ssp.signWithRandom(r('sign'), msg);
  spp.verifySignature(msg, sig);
  const gsp = Z.GenericServerSecretParams.generateWithRandom(r('gsp'));
  const gpp = gsp.getPublicParams();

  const aci = S.Aci.fromUuid(uuid(`${i}/aci`));
  const pni = S.Pni.fromUuid(uuid(`${i}/pni`));
  const t = dayStart + i * DAY;
  const authResp = new Z.ServerZkAuthOperations(ssp).issueAuthCredentialWithPniZkcWithRandom(r('auth'), aci, pni, t);
  new Z.ClientZkAuthOperations(spp).receiveAuthCredentialWithPniAsServiceId(aci, pni, t, authResp);

  const clResp = Z.CallLinkAuthCredentialResponse.issueCredentialWithRandom(aci, t, gsp, r('calllink'));
  clResp.receive(aci, t, gpp);

  const profileKey = new Z.ProfileKey(r('profile-key'));
  const commitment = profileKey.getCommitment(aci);
  const profOps = new Z.ClientZkProfileOperations(spp);
  const ctx = profOps.createProfileKeyCredentialRequestContextWithRandom(r('pk-request'), aci, profileKey);
  const req = ctx.getRequest();
  const expiration = t + (1 + (i % 7)) * DAY;
  const pkResp = new Z.ServerZkProfileOperations(ssp).issueExpiringProfileKeyCredentialWithRandom(
    r('pk-issue'), req, aci, commitment, expiration);
  profOps.receiveExpiringProfileKeyCredential(ctx, pkResp, new Date(t * 1000));

  const gsecret = Z.GroupSecretParams.generateWithRandom(r('group'));
  const cipher = new Z.ClientZkGroupCipher(gsecret);
  const members = [aci];
  for (let m = 0; m < 1 + (i % 5); m++) {
    members.push(m % 2 ? S.Pni.fromUuid(uuid(`${i}/m${m}`)) : S.Aci.fromUuid(uuid(`${i}/m${m}`)));
  }
  const gsExp = t + DAY;
  const keyPair = Z.GroupSendDerivedKeyPair.forExpiration(new Date(gsExp * 1000), ssp);
  const gsResp = Z.GroupSendEndorsementsResponse.issueWithRandom(
    members.map((m) => cipher.encryptServiceId(m)), keyPair, r('gse'));
  const now = new Date((t + 3600) * 1000);
  const received = gsResp.receiveWithServiceIds(members, aci, gsecret, spp, now);
  const token = Z.GroupSendEndorsement.combine(received.endorsements.slice(1))
    .toFullToken(gsecret, gsResp.getExpiration());
  const recipients = members.slice(1);
  token.verify(recipients, keyPair, now);

  cases.push({
    server_seed_hex: hex(r('ssp')),
    server_secret_params_b64: b64(ssp.serialize()),
    server_public_params_b64: b64(spp.serialize()),
    notary_message_hex: hex(msg),
    notary_randomness_hex: hex(r('sign')),
    notary_signature_hex: hex(sig.serialize()),
    generic_seed_hex: hex(r('gsp')),
    generic_secret_params_b64: b64(gsp.serialize()),
    generic_public_params_b64: b64(gpp.serialize()),
    aci: aci.getServiceIdString(),
    pni: pni.getServiceIdString(),
    redemption_time: t,
    auth_randomness_hex: hex(r('auth')),
    auth_response_b64: b64(authResp.serialize()),
    call_link_randomness_hex: hex(r('calllink')),
    call_link_response_b64: b64(clResp.serialize()),
    profile_commitment_b64: b64(commitment.serialize()),
    profile_request_b64: b64(req.serialize()),
    profile_expiration: expiration,
    profile_randomness_hex: hex(r('pk-issue')),
    profile_response_b64: b64(pkResp.serialize()),
    group_send_expiration: gsExp,
    group_send_derived_key_pair_b64: b64(keyPair.serialize()),
    group_send_recipients: recipients.map((m) => m.getServiceIdString()),
    group_send_now: t + 3600,
    group_send_full_token_b64: b64(token.serialize()),
  });
}
const pkg = await import('@signalapp/libsignal-client/package.json', { with: { type: 'json' } });
process.stdout.write(JSON.stringify({
  meta: { generator: 'flatline-testkit/libsignal/gen_zkgroup_cases.mjs', libsignal_client_version: pkg.default.version },
  cases,
}, null, 1) + '\n');
