// A libsignal client asking for an expiring profile key credential, over JSON lines.
// line 1 in: {serverPublicParams (standard base64), aci}; out: {commitment (standard base64), request (hex)}.
// line 2 in: {response (standard base64), now (epoch seconds)}; out: {ok: true, expiration} or {ok: false, error}.
import { createInterface } from 'node:readline';
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');
try {
  const first = await next();
  const spp = new Z.ServerPublicParams(new Uint8Array(Buffer.from(first.serverPublicParams, 'base64')));
  const aci = S.Aci.fromUuid(first.aci);
  const profileKey = new Z.ProfileKey(new Uint8Array(Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1))));
  const ops = new Z.ClientZkProfileOperations(spp);
  const ctx = ops.createProfileKeyCredentialRequestContext(aci, profileKey);
  out({
    commitment: Buffer.from(profileKey.getCommitment(aci).serialize()).toString('base64'),
    request: Buffer.from(ctx.getRequest().serialize()).toString('hex'),
  });
  const second = await next();
  try {
    const response = new Z.ExpiringProfileKeyCredentialResponse(new Uint8Array(Buffer.from(second.response, 'base64')));
    const credential = ops.receiveExpiringProfileKeyCredential(ctx, response, new Date(second.now * 1000));
    out({ ok: true, expiration: credential.getExpirationTime().getTime() / 1000 });
  } catch (e) {
    out({ ok: false, error: String(e) });
  }
} catch (e) {
  out({ ok: false, error: String(e) });
}
process.exit(0);
