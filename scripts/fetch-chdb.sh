#!/usr/bin/env bash
# Fetches chDB's libchdb.so (the embedded ClickHouse engine of fathom's
# default store) from the npm registry into $FATHOM_CHDB_DIR
# (default /var/tmp/fathom-chdb). Needs npm and tar; idempotent.
set -euo pipefail

version="${FATHOM_CHDB_VERSION:-26.5.3}"
dir="${FATHOM_CHDB_DIR:-/var/tmp/fathom-chdb}"
stamp="$dir/VERSION"

if [[ -f "$dir/libchdb.so" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    echo "libchdb.so $version already in $dir"
    exit 0
fi

command -v npm >/dev/null || { echo "fetch-chdb: npm is required (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@chdb/lib-linux-x64-gnu@$version" >/dev/null)
tar -xzf "$work/chdb-lib-linux-x64-gnu-$version.tgz" -C "$work" package/libchdb.so
mv "$work/package/libchdb.so" "$dir/libchdb.so.part"
mv "$dir/libchdb.so.part" "$dir/libchdb.so"
echo "$version" > "$stamp"
echo "libchdb.so $version installed in $dir"
