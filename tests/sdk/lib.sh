# Shared by the SDK checks (run.sh, azure.sh, together.sh); sourced from the repository root.
# `sdk_check PACKAGE==VERSION TEST.py [SERVE FLAGS...]`: makes a venv with the pinned package
# (needs PyPI; FTSWEEP_SDK_VENV reuses a venv), starts target/debug/ftsweep serve (built if missing)
# with the flags on a free port and a temporary state file, runs TEST.py with FTSWEEP_URL and
# FTSWEEP_KEY set, and stops the server. Exits non-zero if any step failed.

sdk_check() {
    local package=$1 test=$2
    shift 2
    local key=sdk-key-0c4f1e8b2a7d
    sdk_tmp=$(mktemp -d)
    sdk_server_pid=""
    trap sdk_cleanup EXIT

    local venv="${FTSWEEP_SDK_VENV:-$sdk_tmp/venv}"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$package"

    local bin="${CARGO_TARGET_DIR:-target}/debug/ftsweep"
    [ -x "$bin" ] || cargo build --quiet
    "$bin" serve --port 0 --key "$key" --state "$sdk_tmp/serve.db" "$@" >"$sdk_tmp/url" 2>"$sdk_tmp/serve.log" &
    sdk_server_pid=$!
    for _ in $(seq 200); do
        [ -s "$sdk_tmp/url" ] && break
        sleep 0.05
    done
    local url
    url=$(head -n 1 "$sdk_tmp/url")
    if [ -z "$url" ]; then
        echo "the server did not start:" >&2
        cat "$sdk_tmp/serve.log" >&2
        exit 1
    fi
    FTSWEEP_URL="$url" FTSWEEP_KEY="$key" "$venv/bin/python" "$test"
}

sdk_cleanup() {
    if [ -n "$sdk_server_pid" ]; then
        kill "$sdk_server_pid" 2>/dev/null || true
        wait "$sdk_server_pid" 2>/dev/null || true
    fi
    rm -rf "$sdk_tmp"
}
