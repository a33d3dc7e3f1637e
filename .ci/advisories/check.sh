#!/usr/bin/env bash
# Known-vulnerable dependencies: `cargo deny check advisories` (deny.toml) against the committed RustSec snapshot
# (snapshot/, see refresh.sh), with fetching disabled. CI reaches no git host, so the snapshot is the database and
# its age is this check's limit: an advisory published after the snapshot's date is not known here.
#
#   .ci/advisories/check.sh [WORKSPACE]     (default: this repository; another directory is for trying the check
#                                            on a lockfile with a known-vulnerable crate)
#
# Fails on any vulnerability, unsound or unmaintained advisory that matches a crate in the build graph and is not
# ignored in deny.toml, and when Cargo.lock names a crate the database has advisories for but the snapshot does not
# hold (the snapshot predates that dependency: refresh it).
set -euo pipefail
export LC_ALL=C  # one sort order for the crate lists (comm)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORKSPACE=$(cd "${1:-$ROOT}" && pwd)
SNAPSHOT=$HERE/snapshot
DENY_VERSION=0.20.2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$TARGET_DIR/cargo-deny-venv-$DENY_VERSION

log() { printf '== advisories: %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/cargo-deny" ]; then
  log "installing cargo-deny $DENY_VERSION into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --require-hashes -r "$HERE/requirements.txt"
fi
"$VENV/bin/cargo-deny" --version | grep -qx "cargo-deny $DENY_VERSION"

# Every crate of Cargo.lock that has advisories in the database must have them in the snapshot.
missing=$(comm -12 "$SNAPSHOT/advised-crates.txt" \
  <(sed -n 's/^name = "\(.*\)"$/\1/p' "$WORKSPACE/Cargo.lock" | sort -u) |
  while read -r crate; do [ -d "$SNAPSHOT/crates/$crate" ] || echo "$crate"; done)
if [ -n "$missing" ]; then
  log "Cargo.lock has crates with advisories the snapshot does not hold: $(echo $missing); run .ci/advisories/refresh.sh"
  exit 1
fi

# cargo-deny opens the database as a git repository (it reads HEAD's commit date) under a directory named after
# the default database URL: a throwaway repository holding the snapshot, committed with the upstream date.
COMMIT=$(sed -n 's/^commit=//p' "$SNAPSHOT/SNAPSHOT")
DATE=$(sed -n 's/^date=//p' "$SNAPSHOT/SNAPSHOT")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DB=$TMP/dbs/advisory-db-3157b0e258782691
mkdir -p "$DB"
cp -r "$SNAPSHOT/crates" "$DB/"
git -C "$DB" init -q
git -C "$DB" add -A
GIT_AUTHOR_DATE=$DATE GIT_COMMITTER_DATE=$DATE \
  git -C "$DB" -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
  commit -q -m "advisory-db $COMMIT"
sed "/^\[advisories\]/a db-path = \"$TMP/dbs\"" "$ROOT/deny.toml" >"$TMP/deny.toml"
grep -q "^db-path = \"$TMP/dbs\"" "$TMP/deny.toml"

# The crate graph comes from `cargo metadata` (it downloads the manifests of every platform's crates from
# crates.io); cargo-deny itself then runs offline.
(cd "$WORKSPACE" && cargo metadata --format-version 1 --locked) >"$TMP/metadata.json"
AGE_DAYS=$(( ($(date +%s) - $(date -d "$DATE" +%s)) / 86400 ))
log "RustSec snapshot ${COMMIT:0:12} of $DATE ($AGE_DAYS days old), $(find "$DB/crates" -name '*.md' | wc -l) advisories"
if [ "$AGE_DAYS" -gt 90 ]; then
  log "the snapshot is over 90 days old: advisories published since are not checked; refresh it (refresh.sh)"
fi
"$VENV/bin/cargo-deny" --offline --color never --manifest-path "$WORKSPACE/Cargo.toml" \
  --metadata-path "$TMP/metadata.json" --config "$TMP/deny.toml" check advisories
