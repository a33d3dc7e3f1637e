// Flatline test identity provider. TEST USE ONLY: it accepts any login and
// grants every consent. It wraps npm `oidc-provider` (pinned in package.json).
//
// Configured by environment variables (see README.md):
//   OP_PORT        port on 127.0.0.1; 0 (default) picks a free one
//   OP_ISSUER      issuer URL; default http://127.0.0.1:<bound port>
//   OP_AUTO_LOGIN  1 = the front channel is only redirects: it logs in as
//                  login_hint (or "alice") with no page. 0 = dev login form
//   OP_STATE_DIR   directory for public-jwks.json (default: a new temp dir)
//   OP_CLIENTS     path to a JSON array of client metadata objects
//
// stdout carries exactly one line, `OP listening on http://127.0.0.1:<port>`,
// printed once the server is ready. Everything else is logged to stderr.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// oidc-provider prints notices with console.info, which goes to stdout.
// Tests read stdout for the ready line, so route everything else to stderr.
console.log = console.error;
console.info = console.error;

const { default: Provider, interactionPolicy } = await import('oidc-provider');

function fail(msg) {
  console.error(`idp: ${msg}`);
  process.exit(2);
}

// ---------------------------------------------------------------- settings
const portEnv = process.env.OP_PORT ?? '0';
const port = Number(portEnv);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad OP_PORT ${portEnv}`);
const autoLogin = process.env.OP_AUTO_LOGIN === '1';
const stateDir = process.env.OP_STATE_DIR || mkdtempSync(join(tmpdir(), 'flatline-idp-'));
if (!process.env.OP_STATE_DIR) console.error(`idp: OP_STATE_DIR not set, using ${stateDir}`);
const DEFAULT_LOGIN = 'alice';

// ---------------------------------------------------------------- keys
// Fresh keys on every start: a restarted OP has different keys (same kids).
function signingJwk(keyPair, alg, kid) {
  return { ...keyPair.privateKey.export({ format: 'jwk' }), alg, kid, use: 'sig' };
}
const privateKeys = [
  signingJwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), 'RS256', 'rsa-1'),
  signingJwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ES256', 'ec-1'),
  signingJwk(generateKeyPairSync('ed25519'), 'EdDSA', 'ed-1'),
];
const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);
const publicJwks = {
  keys: privateKeys.map((k) => Object.fromEntries(
    Object.entries(k).filter(([name]) => !PRIVATE_MEMBERS.has(name)),
  )),
};
try {
  mkdirSync(stateDir, { recursive: true });
  // write-then-rename so a reader never sees a half-written file
  const tmp = join(stateDir, `.public-jwks.json.${process.pid}`);
  writeFileSync(tmp, `${JSON.stringify(publicJwks, null, 2)}\n`);
  renameSync(tmp, join(stateDir, 'public-jwks.json'));
} catch (err) {
  fail(`cannot write public-jwks.json to ${stateDir}: ${err.message}`);
}

// ---------------------------------------------------------------- clients
const CLIENT_DEFAULTS = {
  require_pushed_authorization_requests: true,
  grant_types: ['authorization_code'],
  response_types: ['code'],
};
let clients;
if (process.env.OP_CLIENTS) {
  try {
    clients = JSON.parse(readFileSync(process.env.OP_CLIENTS, 'utf8'));
  } catch (err) {
    fail(`cannot read OP_CLIENTS ${process.env.OP_CLIENTS}: ${err.message}`);
  }
  if (!Array.isArray(clients)) fail('OP_CLIENTS must hold a JSON array of client metadata objects');
} else {
  clients = [{
    client_id: 'flatline',
    client_secret: 'flatline-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    redirect_uris: ['http://127.0.0.1:8080/v1/oidc/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1:8080/v1/oidc/logged-out'],
    backchannel_logout_uri: 'http://127.0.0.1:8080/v1/oidc/backchannel-logout',
    backchannel_logout_session_required: true,
  }];
}
clients = clients.map((c) => ({ ...CLIENT_DEFAULTS, ...c }));

// ---------------------------------------------------------------- accounts
// login_hint "<sub>" logs in as sub with email <sub>@example.test;
// login_hint "<sub>|<email>" overrides the email. The latest login of a sub
// decides the email that later tokens for that sub carry.
function parseLoginHint(hint) {
  const raw = typeof hint === 'string' && hint !== '' ? hint : DEFAULT_LOGIN;
  const bar = raw.indexOf('|');
  if (bar === -1) return { sub: raw, email: `${raw}@example.test` };
  const sub = raw.slice(0, bar) || DEFAULT_LOGIN;
  return { sub, email: raw.slice(bar + 1) };
}
const emailOf = new Map(); // sub -> email of the latest login
const currentEmail = (sub) => emailOf.get(sub) ?? `${sub}@example.test`;

async function findAccount(_ctx, sub) {
  return {
    accountId: sub,
    async claims() {
      const email = currentEmail(sub);
      return {
        sub,
        email,
        email_verified: !email.startsWith('unverified-'),
        preferred_username: sub,
        name: `Test User ${sub}`,
      };
    },
  };
}

// Ask for a new login when the session belongs to someone else than the
// login_hint names (or to the same sub with another email), so reusing a
// cookie jar with a different login_hint does what a test expects.
// (auto-login mode only; with the dev login form the typed name wins.)
const policy = interactionPolicy.base();
if (autoLogin) policy.get('login').checks.push(new interactionPolicy.Check(
  'login_hint_changed',
  'login_hint names a different End-User than the session',
  (ctx) => {
    const { oidc } = ctx;
    if (!oidc.session.accountId || oidc.params.login_hint === undefined) {
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }
    const want = parseLoginHint(oidc.params.login_hint);
    if (want.sub !== oidc.session.accountId || want.email !== currentEmail(want.sub)) {
      return interactionPolicy.Check.REQUEST_PROMPT;
    }
    return interactionPolicy.Check.NO_NEED_TO_PROMPT;
  },
));

// ---------------------------------------------------------------- provider
const configuration = {
  clients,
  findAccount,
  jwks: { keys: privateKeys },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  ttl: { // explicit values, which also silences oidc-provider's notices
    AccessToken: 3600,
    AuthorizationCode: 60,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    PushedAuthorizationRequest: 60,
    Session: 14 * 24 * 3600,
  },
  responseTypes: ['code'],
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  conformIdTokenClaims: false, // put the scope claims into the ID token
  pkce: { required: () => true }, // S256 is the only supported method by default
  features: {
    devInteractions: { enabled: !autoLogin },
    pushedAuthorizationRequests: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: {
    policy,
    // devInteractions (OP_AUTO_LOGIN=0) brings its own /interaction/<uid> pages
    ...(autoLogin ? { url: (_ctx, interaction) => `/interaction/${interaction.uid}` } : {}),
  },
  // Test only: grant every requested scope without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile');
    await grant.save();
    return grant;
  },
  // oidc-provider's own fetch goes through an SSRF-guard dispatcher that
  // destroys sockets to special-use addresses, 127.0.0.0/8 included. The
  // back-channel logout POST targets a test RP on 127.0.0.1, so drop it.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
};

// ---------------------------------------------------------------- http
function readBody(req) {
  return new Promise((resolve, reject) => {
    req.on('data', () => {});
    req.on('end', resolve);
    req.on('error', reject);
  });
}

async function testHook(provider, req, res, url) {
  if (url.pathname === '/__test/health' && (req.method === 'GET' || req.method === 'HEAD')) {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : 'ok\n');
    return;
  }
  if (url.pathname === '/__test/backchannel-logout' && req.method === 'POST') {
    await readBody(req);
    const clientId = url.searchParams.get('client_id');
    const sub = url.searchParams.get('sub');
    const sid = url.searchParams.get('sid') ?? undefined;
    if (!clientId || !sub) throw new Error('client_id and sub are required');
    const client = await provider.Client.find(clientId);
    if (!client) throw new Error(`unknown client_id ${clientId}`);
    if (!client.backchannelLogoutUri) throw new Error(`client ${clientId} has no backchannel_logout_uri`);
    await client.backchannelLogout(sub, sid);
    res.writeHead(204).end();
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('unknown test hook\n');
}

async function autoLoginInteraction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    const { sub, email } = parseLoginHint(details.params.login_hint);
    emailOf.set(sub, email);
    if (details.session?.accountId && details.session.accountId !== sub) {
      // Switching users inside one cookie jar. oidc-provider would answer
      // with an auto-submitting HTML form (POST /session/end/confirm) to end
      // the old session first; to keep the front channel pure redirects we
      // drop the old session here instead (no back-channel logout is sent
      // for it, as when a session expires) and detach it from the interaction.
      const old = details.session.cookie && await provider.Session.find(details.session.cookie);
      if (old) await old.destroy();
      details.session = undefined;
      await details.save(details.exp - Math.floor(Date.now() / 1000));
    }
    await provider.interactionFinished(req, res, { login: { accountId: sub } }, { mergeWithLastSubmission: false });
    return;
  }
  // consent (normally never reached because loadExistingGrant grants all)
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  grant.addOIDCScope('openid email profile');
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const server = createServer();
server.on('error', (err) => fail(`listen failed: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const actualPort = server.address().port;
  const issuer = process.env.OP_ISSUER || `http://127.0.0.1:${actualPort}`;
  let provider;
  try {
    provider = new Provider(issuer, configuration);
  } catch (err) {
    fail(`bad configuration: ${err.stack || err}`);
  }
  provider.on('server_error', (_ctx, err) => console.error('idp server_error:', err));
  provider.on('backchannel.error', (_client, err, _accountId, _sid) => console.error('idp backchannel.error:', err.message));
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, 'http://127.0.0.1');
      if (url.pathname.startsWith('/__test/')) {
        await testHook(provider, req, res, url);
        return;
      }
      if (autoLogin && req.method === 'GET' && /^\/interaction\/[^/]+$/.test(url.pathname)) {
        await autoLoginInteraction(provider, req, res);
        return;
      }
      callback(req, res);
    } catch (err) {
      console.error('idp:', err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${err.message || err}\n`);
    }
  });

  process.stdout.write(`OP listening on http://127.0.0.1:${actualPort}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
