// libsignal-net (npm @signalapp/libsignal-client) against a Flatline server's native TLS listener, in its
// local-test-server mode: TLS to 127.0.0.1 with SNI/Host `localhost`, verified against the given root certificate.
//
// Usage: node net_chat.mjs <port> <root-certificate.der> <username> <password>
// Prints one JSON object on stdout with what it observed; exits 0 unless something threw unexpectedly.

import { readFileSync } from 'node:fs';
import * as S from '@signalapp/libsignal-client';

const [port, certPath, username, password] = process.argv.slice(2);
const der = new Uint8Array(readFileSync(certPath));
const net = new S.Net.Net({
  localTestServer: true,
  userAgent: 'flatline-test',
  TESTING_localServer_chatPort: Number(port),
  TESTING_localServer_cdsiPort: Number(port),
  TESTING_localServer_svr2Port: Number(port),
  TESTING_localServer_svrBPort: Number(port),
  TESTING_localServer_rootCertificateDer: der,
  TESTING_localServer_httpVersion: 1,
});

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms)),
  ]);

const out = {};
let queueEmpty;
const queueEmptySeen = new Promise((resolve) => {
  queueEmpty = resolve;
});
const listener = {
  onIncomingMessage(_envelope, _timestamp, ack) {
    ack.send(200);
  },
  onQueueEmpty() {
    queueEmpty(true);
  },
  onServerTimestamp(ts) {
    out.serverTimestamp = ts;
  },
  onConnectionInterrupted(cause) {
    out.interrupted = cause ? cause.code ?? String(cause) : null;
  },
};

const decode = (body) => (body && body.length ? JSON.parse(Buffer.from(body).toString('utf8')) : null);

const chat = await withTimeout(
  net.connectAuthenticatedChat(username, password, false, listener),
  30000,
  'connectAuthenticatedChat',
);
const whoami = await chat.fetch({ verb: 'GET', path: '/v1/accounts/whoami', headers: [] });
out.whoami = { status: whoami.status, uuid: decode(whoami.body)?.uuid ?? null };
const keepalive = await chat.fetch({ verb: 'GET', path: '/v1/keepalive', headers: [] });
out.keepalive = keepalive.status;
out.queueEmpty = await withTimeout(queueEmptySeen, 30000, 'queue empty');
await chat.disconnect();

try {
  const bad = await withTimeout(
    net.connectAuthenticatedChat(username, `${password}-wrong`, false, listener),
    30000,
    'wrong password',
  );
  out.wrongPassword = 'connected';
  await bad.disconnect();
} catch (e) {
  out.wrongPassword = e.code ?? String(e);
}

const anon = await withTimeout(
  net.connectUnauthenticatedChat({ onConnectionInterrupted() {} }),
  30000,
  'connectUnauthenticatedChat',
);
const anonKeepalive = await anon.fetch({ verb: 'GET', path: '/v1/keepalive', headers: [] });
out.unauthenticatedKeepalive = anonKeepalive.status;
const anonWhoami = await anon.fetch({ verb: 'GET', path: '/v1/accounts/whoami', headers: [] });
out.unauthenticatedWhoami = anonWhoami.status;
await anon.disconnect();

process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
