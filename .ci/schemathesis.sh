#!/usr/bin/env bash
# Property-based API testing: schemathesis (PyPI) against a live `flatline-server dev` on loopback, driven by the
# server's own OpenAPI description (/openapi.json). Two accounts are registered through the real OIDC flow with the
# development identity provider; the run authenticates as one of them wherever the document asks for `basicAuth`.
# Fails on any finding: a 5xx, a status, content type, header or body the document does not describe, schema-invalid
# input that is accepted, a panic in the server log. See docs/DEVELOPMENT.md ("API fuzzing with schemathesis").
#
# Knobs (none start with FLATLINE_, which the server reads as configuration):
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 40)
#   SCHEMATHESIS_SEED          generation seed (default: fixed, so CI runs are comparable)
#   SCHEMATHESIS_OUT           where the server log and reports are kept (default $CARGO_TARGET_DIR/schemathesis)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SCHEMATHESIS_VERSION=4.32.5
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
SEED=${SCHEMATHESIS_SEED:-20261125}
OUT=${SCHEMATHESIS_OUT:-$TARGET_DIR/schemathesis}
HOOKS_DIR=$PWD/.ci
VENV="$TARGET_DIR/schemathesis-venv-$SCHEMATHESIS_VERSION"

log() { printf '== schemathesis: %s\n' "$*" >&2; }

# --- schemathesis in a virtualenv under the (ignored) target directory, reused when the version matches -------
if [ ! -x "$VENV/bin/schemathesis" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits ensurepip into python3-venv.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# --- the server and the register example ----------------------------------------------------------------------
# `cargo test --no-run` builds the same artifacts with the same features as the test run before it in .ci/run,
# so it is a no-op there; `cargo build -p …` would rebuild them without the dev-dependency features.
log "building flatline-server and the register example"
cargo test -q --workspace --locked --no-run
SERVER="$TARGET_DIR/debug/flatline-server"
REGISTER="$TARGET_DIR/debug/examples/register"

WORK=$(mktemp -d)
mkdir -p "$OUT"
SERVER_PID=
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  cp "$WORK/server.log" "$OUT/server.log" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    log "FAILED; server log kept at $OUT/server.log, reports in $OUT (last lines of the log follow)"
    tail -n 60 "$OUT/server.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# A free loopback port (the tiny race until the server binds it is harmless here).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
log "starting flatline-server dev on $BASE"
# Plain-text logs at info: one line per request, errors with their cause.
RUST_LOG=info "$SERVER" dev --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/healthz" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || { log "the server exited"; exit 1; }
  sleep 0.2
done

# --- two accounts through the real registration flow (development IdP, PAR, PKCE, ID token) ------------------
register() {
  local out
  out=$("$REGISTER" "$BASE" "$1")
  printf '%s %s\n' "$(sed -n 's/^  ACI: *//p' <<<"$out")" "$(sed -n 's/^  password: *//p' <<<"$out")"
}
read -r ALICE_ACI ALICE_PASSWORD < <(register schemathesis-alice)
read -r BOB_ACI BOB_PASSWORD < <(register schemathesis-bob)
[ -n "$ALICE_ACI" ] && [ -n "$ALICE_PASSWORD" ] && [ -n "$BOB_ACI" ] && [ -n "$BOB_PASSWORD" ] || {
  log "registration failed"
  exit 1
}
log "registered $ALICE_ACI and $BOB_ACI"

# Credentials for the document's `basicAuth` scheme only: lookups that must be anonymous stay anonymous.
cat >"$WORK/schemathesis.toml" <<'EOF'
[auth.openapi.basicAuth]
username = "${ST_DEVICE_USER}"
password = "${ST_DEVICE_PASSWORD}"
EOF

# Every check but positive_data_acceptance: schema-valid input is often semantically invalid here (a key that is
# valid base64 but no curve point, an unknown session id), and the API answers that with a documented 4xx.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance
CHECKS=$CHECKS,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method
CHECKS=$CHECKS,allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth

run() {
  local name=$1
  shift
  log "run: $name"
  # From the scratch directory: schemathesis and hypothesis write their caches to the working directory.
  # Binary bodies (TUS, multi-recipient) get a serializer from .ci/schemathesis_hooks.py.
  (cd "$WORK" && PYTHONPATH="$HOOKS_DIR" SCHEMATHESIS_HOOKS=schemathesis_hooks timeout 600 "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" --no-color run \
    "$BASE/openapi.json" --checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --request-timeout 10 --generation-database none \
    --report junit --report-dir "$OUT" --report-junit-path "$OUT/$name.xml" "$@") | tee "$WORK/$name.out"
}

# Everything but the account deletion, as Alice. Then the deletion alone, as Bob (it ends his account, after
# which every call is a documented 401).
# The long poll waits up to its timeout (30 s by default) on purpose, longer than schemathesis waits;
# tests/it/devices.rs covers it.
ST_DEVICE_USER="$ALICE_ACI.1" ST_DEVICE_PASSWORD="$ALICE_PASSWORD" run all-operations \
  --exclude-operation-id delete_account --exclude-operation-id wait_for_linked_device
ST_DEVICE_USER="$BOB_ACI.1" ST_DEVICE_PASSWORD="$BOB_PASSWORD" run account-deletion \
  --include-operation-id delete_account --max-examples 5

if grep -n 'panicked' "$WORK/server.log" >&2; then
  log "the server panicked"
  exit 1
fi

# One closing line in the plain 'N passed, N failed' form, summed over both runs.
passed=$(cat "$WORK"/*.out | sed -n 's/.* generated, \([0-9]*\) passed.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
echo "schemathesis: ${passed:-0} passed, 0 failed"
