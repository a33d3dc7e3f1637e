#!/usr/bin/env bash
# Smoke test for the Flatline test IdP (idp.mjs). Needs node, curl, openssl,
# python3, and `npm ci` done in this directory. Exits 0 on success.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/flatline-idp-smoke.XXXXXX")
OP_PID=""
RP_PID=""
cleanup() {
  local rc=$?
  [ -n "$OP_PID" ] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null || true
  [ -n "$RP_PID" ] && kill "$RP_PID" 2>/dev/null && wait "$RP_PID" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "--- idp stderr ---" >&2; cat "$WORK/op.err" >&2 2>/dev/null || true
    echo "--- rp listener stderr ---" >&2; cat "$WORK/rp.err" >&2 2>/dev/null || true
    echo "SMOKE FAILED (work dir kept: $WORK)" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok - $*"; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
[ -d "$HERE/node_modules/oidc-provider" ] || die "run 'npm ci' in $HERE first"

# ------------------------------------------------------------ RP listener
# A tiny back-channel logout receiver: every POST body is saved as
# $WORK/logout.<n>, and it answers 200. It writes its port to $WORK/rp.port.
mkdir -p "$WORK/rp"
python3 - "$WORK" >"$WORK/rp.out" 2>"$WORK/rp.err" <<'PY' &
import http.server, os, sys, itertools
work = sys.argv[1]
counter = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('content-length', '0'))
        body = self.rfile.read(n)
        i = next(counter)
        tmp = os.path.join(work, 'rp', f'.logout.{i}')
        with open(tmp, 'wb') as f:
            f.write(self.path.encode() + b'\n' + self.headers.get('content-type', '').encode() + b'\n' + body)
        os.rename(tmp, os.path.join(work, 'rp', f'logout.{i}'))
        self.send_response(200); self.send_header('cache-control', 'no-store'); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
with open(os.path.join(work, '.rp.port'), 'w') as f: f.write(str(srv.server_address[1]))
os.rename(os.path.join(work, '.rp.port'), os.path.join(work, 'rp.port'))
srv.serve_forever()
PY
RP_PID=$!
for _ in $(seq 100); do [ -s "$WORK/rp.port" ] && break; sleep 0.05; done
[ -s "$WORK/rp.port" ] || die "rp listener did not start"
RP_PORT=$(cat "$WORK/rp.port")
BCL="http://127.0.0.1:$RP_PORT/backchannel-logout"
REDIR="http://127.0.0.1:9/cb"
POSTLOGOUT="http://127.0.0.1:9/logged-out"

# ------------------------------------------------------------ clients
cat >"$WORK/clients.json" <<EOF
[
  { "client_id": "flatline", "client_secret": "flatline-secret",
    "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "RS256",
    "redirect_uris": ["$REDIR"], "post_logout_redirect_uris": ["$POSTLOGOUT"],
    "backchannel_logout_uri": "$BCL", "backchannel_logout_session_required": true },
  { "client_id": "flatline-es", "client_secret": "flatline-es-secret",
    "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "ES256",
    "redirect_uris": ["$REDIR"], "backchannel_logout_uri": "$BCL", "backchannel_logout_session_required": true },
  { "client_id": "flatline-ed", "client_secret": "flatline-ed-secret",
    "token_endpoint_auth_method": "client_secret_post", "id_token_signed_response_alg": "EdDSA",
    "redirect_uris": ["$REDIR"], "backchannel_logout_uri": "$BCL", "backchannel_logout_session_required": true }
]
EOF

# ------------------------------------------------------------ start the OP
mkdir -p "$WORK/state"
OP_PORT=0 OP_AUTO_LOGIN=1 OP_STATE_DIR="$WORK/state" OP_CLIENTS="$WORK/clients.json" \
  node "$HERE/idp.mjs" >"$WORK/op.out" 2>"$WORK/op.err" &
OP_PID=$!
for _ in $(seq 200); do
  grep -q '^OP listening on ' "$WORK/op.out" 2>/dev/null && break
  kill -0 "$OP_PID" 2>/dev/null || die "idp exited early"
  sleep 0.05
done
grep -q '^OP listening on ' "$WORK/op.out" || die "no ready line within 10 s"
[ "$(wc -l <"$WORK/op.out")" -eq 1 ] || die "stdout must be exactly one line, got: $(cat "$WORK/op.out")"
OP=$(sed -n 's/^OP listening on \(http:\/\/127\.0\.0\.1:[0-9][0-9]*\)$/\1/p' "$WORK/op.out")
[ -n "$OP" ] || die "malformed ready line: $(cat "$WORK/op.out")"
ok "ready line: $(cat "$WORK/op.out")"

[ "$(curl -s -o /dev/null -w '%{http_code}' "$OP/__test/health")" = 200 ] || die "health hook"
ok "GET /__test/health -> 200"

curl -sf "$OP/.well-known/openid-configuration" >"$WORK/discovery.json"
python3 - "$WORK/discovery.json" "$OP" <<'PY' || die "discovery"
import json, sys
d = json.load(open(sys.argv[1])); op = sys.argv[2]
assert d['issuer'] == op, d['issuer']
assert d['pushed_authorization_request_endpoint'] == op + '/request'
assert d['authorization_endpoint'] == op + '/auth'
assert d['token_endpoint'] == op + '/token'
assert d['jwks_uri'] == op + '/jwks'
assert d['end_session_endpoint'] == op + '/session/end'
assert d['authorization_response_iss_parameter_supported'] is True
assert d['backchannel_logout_supported'] is True and d['backchannel_logout_session_supported'] is True
assert d['code_challenge_methods_supported'] == ['S256']
for a in ('RS256', 'ES256', 'EdDSA'): assert a in d['id_token_signing_alg_values_supported']
PY
ok "discovery (issuer, /request, /auth, /token, /jwks, /session/end, iss param, back-channel, S256)"

# public-jwks.json must equal /jwks and hold no private members
curl -sf "$OP/jwks" >"$WORK/jwks.json"
python3 - "$WORK/state/public-jwks.json" "$WORK/jwks.json" <<'PY' || die "public-jwks.json"
import json, sys
f = json.load(open(sys.argv[1])); w = json.load(open(sys.argv[2]))
kids = {k['kid']: k for k in f['keys']}
assert set(kids) == {'rsa-1', 'ec-1', 'ed-1'}, kids.keys()
assert (kids['rsa-1']['kty'], kids['rsa-1']['alg']) == ('RSA', 'RS256')
assert (kids['ec-1']['kty'], kids['ec-1']['crv'], kids['ec-1']['alg']) == ('EC', 'P-256', 'ES256')
assert (kids['ed-1']['kty'], kids['ed-1']['crv'], kids['ed-1']['alg']) == ('OKP', 'Ed25519', 'EdDSA')
for k in f['keys']:
    assert k['use'] == 'sig'
    assert not set(k) & {'d', 'p', 'q', 'dp', 'dq', 'qi'}, k
def norm(s): return sorted(json.dumps(k, sort_keys=True) for k in s['keys'])
assert norm(f) == norm(w), 'public-jwks.json differs from /jwks'
PY
ok "public-jwks.json: rsa-1/ec-1/ed-1, public only, same as /jwks"

# verify_jws TOKEN -> prints header/claims JSON if the signature verifies
# against the pinned public-jwks.json (node:crypto, no extra packages)
verify_jws() {
  node --input-type=module -e '
    import { createPublicKey, verify } from "node:crypto";
    import { readFileSync } from "node:fs";
    const [jwt, jwksFile] = process.argv.slice(1);
    const [h, p, s] = jwt.split(".");
    const header = JSON.parse(Buffer.from(h, "base64url"));
    const jwk = JSON.parse(readFileSync(jwksFile, "utf8")).keys.find((k) => k.kid === header.kid);
    if (!jwk) throw new Error(`unknown kid ${header.kid}`);
    const key = createPublicKey({ key: jwk, format: "jwk" });
    const data = Buffer.from(`${h}.${p}`), sig = Buffer.from(s, "base64url");
    const ok = { RS256: () => verify("sha256", data, key, sig),
                 ES256: () => verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, sig),
                 EdDSA: () => verify(null, data, key, sig) }[header.alg]?.();
    if (!ok) throw new Error(`bad signature (alg ${header.alg})`);
    console.log(JSON.stringify({ header, claims: JSON.parse(Buffer.from(p, "base64url")) }));
  ' "$1" "$WORK/state/public-jwks.json"
}

# ------------------------------------------------------------ login flow
# login CLIENT_ID SECRET AUTH(basic|post) LOGIN_HINT TAG [SEED_JAR] -> writes $WORK/<tag>.*
# Sets: CODE, ID_TOKEN, NONCE, JAR
client_auth() { # METHOD ID SECRET -> curl args on stdout, one per line
  # (client_id itself is always sent in the form body by the callers)
  if [ "$1" = basic ]; then printf '%s\n' -u "$2:$3"
  else printf '%s\n' --data-urlencode "client_secret=$3"; fi
}
login() {
  local cid=$1 csec=$2 meth=$3 hint=$4 tag=$5
  local verifier challenge state par request_uri next chain auth
  mapfile -t auth < <(client_auth "$meth" "$cid" "$csec")
  verifier=$(openssl rand 32 | b64url)
  challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary | b64url)
  NONCE=$(openssl rand 16 | b64url); state=$(openssl rand 16 | b64url)
  JAR="$WORK/$tag.jar"
  if [ -n "${6:-}" ]; then cp "$6" "$JAR"; else : >"$JAR"; fi

  # 1. PAR with client authentication -> 201 {request_uri, expires_in}
  par=$(curl -sS -w '\n%{http_code}' "${auth[@]}" "$OP/request" \
    --data-urlencode response_type=code --data-urlencode "client_id=$cid" \
    --data-urlencode "redirect_uri=$REDIR" --data-urlencode "scope=openid email profile" \
    --data-urlencode "state=$state" --data-urlencode "nonce=$NONCE" \
    --data-urlencode "code_challenge=$challenge" --data-urlencode code_challenge_method=S256 \
    --data-urlencode "login_hint=$hint")
  [ "$(printf '%s' "$par" | tail -n1)" = 201 ] || die "$tag: PAR: $par"
  request_uri=$(printf '%s' "$par" | head -n1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_uri"])')

  # 2. front channel: follow 303s with a cookie jar until the redirect_uri
  next=$(curl -sS -o /dev/null -b "$JAR" -c "$JAR" -w '%{redirect_url}' -G "$OP/auth" \
    --data-urlencode "client_id=$cid" --data-urlencode "request_uri=$request_uri")
  chain="/auth"
  for _ in 1 2 3 4 5 6 7 8; do
    case "$next" in "$REDIR"*|"") break ;; esac
    chain="$chain -> ${next#"$OP"}"
    next=$(curl -sS -o "$WORK/$tag.last-body" -b "$JAR" -c "$JAR" -w '%{redirect_url}' "$next")
  done
  case "$next" in "$REDIR"?*) ;; *) die "$tag: did not reach redirect_uri (chain: $chain, last: '$next', body: $(cat "$WORK/$tag.last-body" 2>/dev/null))" ;; esac
  chain="$chain -> redirect_uri?code&state&iss"
  CODE=$(python3 - "$next" "$state" "$OP" "$REDIR" <<'PY'
import sys, urllib.parse as u
url, state, op, redir = sys.argv[1:]
parts = u.urlsplit(url)
assert f'{parts.scheme}://{parts.netloc}{parts.path}' == redir, url
q = u.parse_qs(parts.query)
assert 'error' not in q, q
assert q['state'] == [state], ('state', q.get('state'))
assert q['iss'] == [op], ('iss', q.get('iss'))
print(q['code'][0])
PY
) || die "$tag: callback checks on $next"
  [ "$tag" = rs ] && echo "   redirect chain: $chain"

  # 3. token exchange with the same client authentication + code_verifier
  curl -sS "${auth[@]}" "$OP/token" --data-urlencode grant_type=authorization_code \
    --data-urlencode "client_id=$cid" --data-urlencode "code=$CODE" --data-urlencode "redirect_uri=$REDIR" \
    --data-urlencode "code_verifier=$verifier" >"$WORK/$tag.token.json"
  ID_TOKEN=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["token_type"]=="Bearer", d; print(d["id_token"])' "$WORK/$tag.token.json") \
    || die "$tag: token response: $(cat "$WORK/$tag.token.json")"
}

# check_id_token TAG ALG KID SUB EMAIL EMAIL_VERIFIED CLIENT_ID -> prints sid
check_id_token() {
  verify_jws "$ID_TOKEN" >"$WORK/$1.id_token.json" || die "$1: id_token signature"
  python3 - "$WORK/$1.id_token.json" "$2" "$3" "$4" "$5" "$6" "$7" "$NONCE" "$OP" <<'PY' || die "$1: id_token claims: $(cat "$WORK/$1.id_token.json")"
import json, sys, time
t = json.load(open(sys.argv[1])); alg, kid, sub, email, ev, cid, nonce, op = sys.argv[2:]
h, c = t['header'], t['claims']
assert h['alg'] == alg and h['kid'] == kid, h
assert c['iss'] == op and c['aud'] == cid and c['sub'] == sub, c
assert c['nonce'] == nonce, ('nonce', c.get('nonce'))
assert c['email'] == email, ('email', c.get('email'))
assert c['email_verified'] is (ev == 'true'), ('email_verified', c.get('email_verified'))
assert c['preferred_username'] == sub and c['name'], c
assert c.get('sid'), 'no sid'
assert c['iat'] <= time.time() + 5 < c['exp'], c
print(c['sid'])
PY
}

login flatline flatline-secret basic alice rs
SID=$(check_id_token rs RS256 rsa-1 alice alice@example.test true flatline)
RS_JAR=$JAR
ok "flatline (client_secret_basic): PAR+PKCE+nonce+state+login_hint, iss in callback, ID token RS256/rsa-1, sub=alice, email, sid=$SID"

login flatline-es flatline-es-secret basic carol es
check_id_token es ES256 ec-1 carol carol@example.test true flatline-es >/dev/null
ok "flatline-es: ID token ES256/ec-1, signature verifies with public-jwks.json"

login flatline-ed flatline-ed-secret post dave ed
check_id_token ed EdDSA ed-1 dave dave@example.test true flatline-ed >/dev/null
ok "flatline-ed (client_secret_post): ID token EdDSA/ed-1, signature verifies with public-jwks.json"

login flatline flatline-secret basic '' default
check_id_token default RS256 rsa-1 alice alice@example.test true flatline >/dev/null
ok "no login_hint -> alice"

login flatline flatline-secret basic 'bob|bob.new@example.org' override
check_id_token override RS256 rsa-1 bob bob.new@example.org true flatline >/dev/null
login flatline flatline-secret basic 'bob|unverified-bob@example.org' unverified
check_id_token unverified RS256 rsa-1 bob unverified-bob@example.org false flatline >/dev/null
ok "login_hint 'sub|email' overrides email; 'unverified-' email -> email_verified false"

# reusing a logged-in cookie jar with another login_hint logs in the new user
cp "$RS_JAR" "$WORK/reuse.seed"
login flatline flatline-secret basic erin reuse "$WORK/reuse.seed"
check_id_token reuse RS256 rsa-1 erin erin@example.test true flatline >/dev/null
cp "$WORK/reuse.jar" "$WORK/reuse2.seed"
login flatline flatline-secret basic erin reuse2 "$WORK/reuse2.seed"
SID_REUSE2=$(check_id_token reuse2 RS256 rsa-1 erin erin@example.test true flatline)
SID_REUSE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["claims"]["sid"])' "$WORK/reuse.id_token.json")
[ "$SID_REUSE" = "$SID_REUSE2" ] || die "same login_hint + same jar should reuse the session"
cp "$WORK/reuse2.jar" "$WORK/reuse3.seed"
login flatline flatline-secret basic 'erin|erin.changed@example.org' reuse3 "$WORK/reuse3.seed"
SID_REUSE3=$(check_id_token reuse3 RS256 rsa-1 erin erin.changed@example.org true flatline)
[ "$SID_REUSE3" = "$SID_REUSE2" ] || die "same sub with a new email should keep the session"
ok "cookie jar reuse: other login_hint -> new login; same login_hint -> same session (sid); same sub + new email -> email changes, same sid"

# ------------------------------------------------------------ negative checks
code=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -G "$OP/auth" \
  --data-urlencode client_id=flatline --data-urlencode response_type=code \
  --data-urlencode "redirect_uri=$REDIR" --data-urlencode scope=openid \
  --data-urlencode code_challenge=$(openssl rand 32 | b64url) --data-urlencode code_challenge_method=S256)
case "$code" in *error=invalid_request*) ;; *) die "/auth without PAR was not refused: $code" ;; esac
par=$(curl -sS -u flatline:flatline-secret "$OP/request" --data-urlencode response_type=code \
  --data-urlencode client_id=flatline --data-urlencode "redirect_uri=$REDIR" --data-urlencode scope=openid)
case "$par" in *invalid_request*PKCE*) ;; *) die "PAR without PKCE was not refused: $par" ;; esac
par=$(curl -sS "$OP/request" --data-urlencode response_type=code --data-urlencode client_id=flatline \
  --data-urlencode "redirect_uri=$REDIR" --data-urlencode scope=openid \
  --data-urlencode code_challenge=$(openssl rand 32 | b64url) --data-urlencode code_challenge_method=S256)
case "$par" in *invalid_client*) ;; *) die "PAR without client auth was not refused: $par" ;; esac
ok "refused: /auth without PAR, PAR without PKCE, PAR without client auth"

# ------------------------------------------------------------ back-channel logout
# check_logout FILE CLIENT_ID ALG KID SUB SID
check_logout() {
  local f=$1
  [ "$(sed -n 1p "$f")" = /backchannel-logout ] || die "logout POST path: $(sed -n 1p "$f")"
  [ "$(sed -n 2p "$f")" = application/x-www-form-urlencoded ] || die "logout content-type: $(sed -n 2p "$f")"
  local tok
  tok=$(sed -n 3p "$f" | python3 -c 'import sys,urllib.parse as u; print(u.parse_qs(sys.stdin.read())["logout_token"][0])')
  verify_jws "$tok" >"$f.json" || die "logout_token signature"
  python3 - "$f.json" "$2" "$3" "$4" "$5" "$6" "$OP" <<'PY' || die "logout_token: $(cat "$f.json")"
import json, sys
t = json.load(open(sys.argv[1])); cid, alg, kid, sub, sid, op = sys.argv[2:]
h, c = t['header'], t['claims']
assert h['typ'] == 'logout+jwt' and h['alg'] == alg and h['kid'] == kid, h
assert c['events'] == {'http://schemas.openid.net/event/backchannel-logout': {}}, c
assert c['iss'] == op and c['aud'] == cid and c['sub'] == sub and c['sid'] == sid, c
assert c.get('jti') and 'nonce' not in c and c['exp'] > c['iat'], c
PY
}
wait_logout() { # N -> waits for $WORK/rp/logout.N
  for _ in $(seq 100); do [ -f "$WORK/rp/logout.$1" ] && return 0; sleep 0.05; done
  die "no back-channel logout POST #$1 arrived"
}

st=$(curl -sS -o "$WORK/hook.out" -w '%{http_code}' -X POST \
  "$OP/__test/backchannel-logout?client_id=flatline&sub=alice&sid=$SID")
[ "$st" = 204 ] || die "backchannel hook: $st $(cat "$WORK/hook.out")"
wait_logout 1
check_logout "$WORK/rp/logout.1" flatline RS256 rsa-1 alice "$SID"
ok "test hook -> logout_token (typ logout+jwt, RS256/rsa-1, events, sub, sid, jti, no nonce)"

st=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$OP/__test/backchannel-logout?client_id=flatline-ed&sub=dave&sid=sid-ed")
[ "$st" = 204 ] || die "backchannel hook (ed): $st"
wait_logout 2
check_logout "$WORK/rp/logout.2" flatline-ed EdDSA ed-1 dave sid-ed
ok "test hook for flatline-ed -> EdDSA/ed-1 logout_token"

st=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$OP/__test/backchannel-logout?client_id=flatline-es&sub=carol&sid=sid-es")
[ "$st" = 204 ] || die "backchannel hook (es): $st"
wait_logout 3
check_logout "$WORK/rp/logout.3" flatline-es ES256 ec-1 carol sid-es
ok "test hook for flatline-es -> ES256/ec-1 logout_token"

st=$(curl -sS -o "$WORK/hook.out" -w '%{http_code}' -X POST "$OP/__test/backchannel-logout?client_id=nope&sub=x")
[ "$st" = 500 ] && grep -q 'unknown client_id' "$WORK/hook.out" || die "hook with unknown client: $st $(cat "$WORK/hook.out")"
ok "test hook with unknown client -> 500 with error text"

# ------------------------------------------------------------ RP-initiated logout
# GET /session/end (same cookie jar as the login) -> HTML form with xsrf,
# POST /session/end/confirm logout=yes -> 303 post_logout_redirect_uri?state,
# and the OP sends a back-channel logout for the session.
# (a fresh login: the alice session above was dropped by the jar-reuse test)
login flatline flatline-secret basic frank rpl
SID_RPL=$(check_id_token rpl RS256 rsa-1 frank frank@example.test true flatline)
curl -sS -b "$JAR" -c "$JAR" -o "$WORK/end.html" -G "$OP/session/end" \
  --data-urlencode "id_token_hint=$ID_TOKEN" --data-urlencode "post_logout_redirect_uri=$POSTLOGOUT" \
  --data-urlencode state=bye-1 --data-urlencode client_id=flatline
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$WORK/end.html" | head -n1)
[ -n "$XSRF" ] || die "no xsrf in logout form: $(cat "$WORK/end.html")"
loc=$(curl -sS -b "$JAR" -c "$JAR" -o /dev/null -w '%{http_code} %{redirect_url}' \
  "$OP/session/end/confirm" --data-urlencode "xsrf=$XSRF" --data-urlencode logout=yes)
[ "$loc" = "303 $POSTLOGOUT?state=bye-1" ] || die "end session confirm: $loc"
wait_logout 4
check_logout "$WORK/rp/logout.4" flatline RS256 rsa-1 frank "$SID_RPL"
ok "RP-initiated logout: /session/end -> /session/end/confirm -> 303 $POSTLOGOUT?state=bye-1, back-channel logout sent"

# ------------------------------------------------------------ shutdown
kill -TERM "$OP_PID"
rc=0; wait "$OP_PID" || rc=$?
OP_PID=""
[ "$rc" = 0 ] || die "idp exit status after SIGTERM: $rc"
ok "SIGTERM -> clean exit 0"
echo "SMOKE OK"
