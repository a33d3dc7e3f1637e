#!/usr/bin/env bash
# Refreshes the RustSec advisory snapshot (.ci/advisories/snapshot) that CI checks Cargo.lock against, where the
# advisory database's git repository can be reached (CI cannot: it has no network beyond the package registries).
#
#   .ci/advisories/refresh.sh [CLONE]
#
# CLONE is an existing clone of the RustSec advisory-db (a work tree or a bare repository; its HEAD is used);
# without it the script clones the database itself. Only the advisories of crates named in Cargo.lock are kept (an
# advisory of any other crate cannot match this lockfile), plus the list of every crate the database has
# advisories for, so that check.sh can tell when Cargo.lock gains such a crate and the snapshot must be refreshed.
# Commit the result; run it again whenever Cargo.lock gains crates or the snapshot gets old.
set -euo pipefail
export LC_ALL=C  # one sort order for the crate lists (comm)
cd "$(dirname "$0")/../.."
OUT=.ci/advisories/snapshot

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ $# -ge 1 ]; then
  SRC=$1
else
  git clone -q --depth 1 https://github.com/rustsec/advisory-db "$TMP/clone"
  SRC=$TMP/clone
fi
COMMIT=$(git -C "$SRC" rev-parse HEAD)
DATE=$(git -C "$SRC" show -s --format=%cI HEAD)

git -C "$SRC" ls-tree -r --name-only HEAD crates | cut -d/ -f2 | sort -u >"$TMP/advised"
sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u >"$TMP/locked"

rm -rf "$OUT"
mkdir -p "$OUT"
comm -12 "$TMP/advised" "$TMP/locked" | while read -r crate; do
  git -C "$SRC" archive HEAD "crates/$crate" | tar -x -C "$OUT"
done
cp "$TMP/advised" "$OUT/advised-crates.txt"
git -C "$SRC" show HEAD:LICENSE.txt >"$OUT/LICENSE.txt"
cat >"$OUT/SNAPSHOT" <<INFO
# RustSec advisory-db (CC0-1.0, LICENSE.txt), the advisories of the crates in Cargo.lock; made by refresh.sh.
commit=$COMMIT
date=$DATE
INFO
echo "snapshot of advisory-db $COMMIT ($DATE): $(find "$OUT/crates" -name '*.md' | wc -l) advisories of" \
  "$(ls "$OUT/crates" | wc -l) crates in Cargo.lock"
