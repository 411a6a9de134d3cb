#!/usr/bin/env bash
# Together's Python SDK against `ftsweep serve --protocol together`, from the repository root:
# `bash tests/sdk/together.sh`. Makes a venv with a pinned `together` (needs PyPI; set
# FTSWEEP_SDK_VENV to reuse a venv), starts target/debug/ftsweep (built if missing) on a free port
# with a temporary state file, runs tests/sdk/test_together_sdk.py, and stops the server. Exits
# non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOGETHER_VERSION=3.1.1
tmp=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

venv="${FTSWEEP_SDK_VENV:-$tmp/venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "together==$TOGETHER_VERSION"

bin="${CARGO_TARGET_DIR:-target}/debug/ftsweep"
[ -x "$bin" ] || cargo build --quiet
# A small per-example delay keeps the cancelled job running long enough to be cancelled.
"$bin" serve --protocol together --port 0 --key sdk-key-0c4f1e8b2a7d --state "$tmp/serve.db" \
    --example-delay-ms 1 --endpoint-delay-ms 200 >"$tmp/url" 2>"$tmp/serve.log" &
server_pid=$!
for _ in $(seq 200); do
    [ -s "$tmp/url" ] && break
    sleep 0.05
done
url=$(head -n 1 "$tmp/url")
if [ -z "$url" ]; then
    echo "the server did not start:" >&2
    cat "$tmp/serve.log" >&2
    exit 1
fi

FTSWEEP_URL="$url" FTSWEEP_KEY=sdk-key-0c4f1e8b2a7d "$venv/bin/python" tests/sdk/test_together_sdk.py
