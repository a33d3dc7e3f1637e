// A libsignal client receiving zkgroup credentials from a Flatline server.
// stdin: one JSON object {serverPublicParams, genericServerPublicParams (standard base64), aci, pni (UUID
// strings), groupCredentials (the body of GET /v1/certificate/auth/group), presentAt (epoch seconds)}.
// stdout: one JSON line {ok: true, received, callLinkReceived, presentations} or {ok: false, error}.
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const b = (s) => new Uint8Array(Buffer.from(s, 'base64'));
try {
  const spp = new Z.ServerPublicParams(b(input.serverPublicParams));
  const gpp = new Z.GenericServerPublicParams(b(input.genericServerPublicParams));
  const aci = S.Aci.fromUuid(input.aci);
  const pni = S.Pni.fromUuid(input.pni);
  const ops = new Z.ClientZkAuthOperations(spp);
  const group = Z.GroupSecretParams.generate();
  let received = 0;
  let presentations = 0;
  for (const c of input.groupCredentials.credentials) {
    const response = new Z.AuthCredentialWithPniResponse(b(c.credential));
    const credential = ops.receiveAuthCredentialWithPniAsServiceId(aci, pni, c.redemptionTime, response);
    received++;
    // A presentation made from it parses and serializes (the group server verifies it).
    const p = ops.createAuthCredentialWithPniPresentation(group, credential);
    if (p.serialize().length > 0) presentations++;
  }
  let callLinkReceived = 0;
  for (const c of input.groupCredentials.callLinkAuthCredentials) {
    new Z.CallLinkAuthCredentialResponse(b(c.credential)).receive(aci, c.redemptionTime, gpp);
    callLinkReceived++;
  }
  process.stdout.write(JSON.stringify({ ok: true, received, callLinkReceived, presentations }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
}
