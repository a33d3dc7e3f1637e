// Regenerates flatline-core/src/sealed/testdata/libsignal_ssv2.json: SSv2 SentMessages made by npm libsignal's
// sealedSenderMultiRecipientEncrypt (over real PQXDH sessions, Kyber included) with libsignal's own parse of each,
// and a libsignal-made sender certificate chain. Run from this directory:
//   node make-ssv2-vectors.mjs > ../../flatline-core/src/sealed/testdata/libsignal_ssv2.json
// It drives sealed.mjs over its JSON-lines protocol, as the integration tests do.
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const child = spawn(process.execPath, [new URL('./sealed.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
async function call(req) {
  child.stdin.write(`${JSON.stringify(req)}\n`);
  const { value } = await lines.next();
  const answer = JSON.parse(value);
  if (!answer.ok) throw new Error(`${req.op}: ${answer.error}`);
  return answer;
}

const alice = randomUUID(), bob = randomUUID(), carol = randomUUID(), dave = `PNI:${randomUUID()}`;
await call({ op: 'party', name: 'alice', aci: alice, devices: [{ id: 1, registrationId: 1 }] });
await call({ op: 'party', name: 'bob', aci: bob, devices: [{ id: 1, registrationId: 4321 }, { id: 2, registrationId: 16383 }] });
await call({ op: 'party', name: 'carol', aci: carol, devices: [{ id: 1, registrationId: 7 }] });
await call({ op: 'party', name: 'dave', aci: dave, devices: [{ id: 3, registrationId: 300 }, { id: 127, registrationId: 1 }] });
const expiration = 1_900_000_000_000;
const chain = await call({ op: 'issue', name: 'alice', keyId: 7, expiration });

const cases = [];
for (const [recipients, excluded] of [
  [[['bob', 1], ['bob', 2], ['carol', 1]], [randomUUID()]],
  [[['carol', 1]], []],
  [[['bob', 2], ['dave', 3], ['dave', 127]], [randomUUID(), randomUUID()]],
]) {
  const m = await call({
    op: 'multi', from: 'alice', certificate: chain.certificate,
    recipients: recipients.map(([name, device]) => ({ name, device })), excluded, plaintext: Buffer.from('vector').toString('base64'),
  });
  cases.push({ message: m.message, libsignalParse: m.parsed });
}
child.stdin.end();

const version = createRequire(import.meta.url)('@signalapp/libsignal-client/package.json').version;
process.stdout.write(`${JSON.stringify({
  meta: {
    generator: 'flatline-testkit/libsignal/make-ssv2-vectors.mjs (sealedSenderMultiRecipientEncrypt; libsignal parse via SealedSenderMultiRecipientMessage)',
    libsignal_client_version: version,
  },
  senderCertificate: { certificate: chain.certificate, trustRoot: chain.trustRoot, senderAci: alice, senderDevice: 1, expiration, serverCertificateId: 7 },
  cases,
}, null, 1)}\n`);
