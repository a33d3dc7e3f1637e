// A group server and a client, both libsignal: issues group send endorsements with the Flatline server's own
// ServerSecretParams and combines them into the Group-Send-Token a client sends to the chat server.
// stdin: {serverSecretParams (standard base64), members (service-id strings; the first is the sender),
// expiration, now (epoch seconds)}. stdout: one JSON line {ok: true, token (standard base64)} or {ok: false, error}.
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
try {
  const ssp = new Z.ServerSecretParams(new Uint8Array(Buffer.from(input.serverSecretParams, 'base64')));
  const spp = ssp.getPublicParams();
  const members = input.members.map((m) => S.ServiceId.parseFromServiceIdString(m));
  const group = Z.GroupSecretParams.generate();
  const cipher = new Z.ClientZkGroupCipher(group);
  const keyPair = Z.GroupSendDerivedKeyPair.forExpiration(new Date(input.expiration * 1000), ssp);
  const response = Z.GroupSendEndorsementsResponse.issue(members.map((m) => cipher.encryptServiceId(m)), keyPair);
  const now = new Date(input.now * 1000);
  const received = response.receiveWithServiceIds(members, members[0], group, spp, now);
  const token = Z.GroupSendEndorsement.combine(received.endorsements.slice(1))
    .toFullToken(group, response.getExpiration());
  process.stdout.write(JSON.stringify({ ok: true, token: Buffer.from(token.serialize()).toString('base64') }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
}
