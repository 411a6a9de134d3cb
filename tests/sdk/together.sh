#!/usr/bin/env bash
# Together's Python SDK against `ftsweep serve --protocol together`, from the repository root:
# `bash tests/sdk/together.sh`. Makes a venv with a pinned `together` (needs PyPI; set
# FTSWEEP_SDK_VENV to reuse a venv), starts target/debug/ftsweep (built if missing) on a free port
# with a temporary state file, runs tests/sdk/test_together_sdk.py, and stops the server
# (tests/sdk/lib.sh). Exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOGETHER_VERSION=3.1.1
source tests/sdk/lib.sh
# A small per-example delay keeps the cancelled job running long enough to be cancelled.
sdk_check "together==$TOGETHER_VERSION" tests/sdk/test_together_sdk.py \
    --protocol together --example-delay-ms 1 --endpoint-delay-ms 200
