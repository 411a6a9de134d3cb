#!/usr/bin/env bash
# The OpenAI Python SDK against `ftsweep serve`, from the repository root: `bash tests/sdk/run.sh`.
# Makes a venv with a pinned `openai` (needs PyPI; set FTSWEEP_SDK_VENV to reuse a venv), starts
# target/debug/ftsweep (built if missing) on a free port with a temporary state file, runs
# tests/sdk/test_openai_sdk.py, and stops the server (tests/sdk/lib.sh). Exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_VERSION=3.54.0
source tests/sdk/lib.sh
sdk_check "openai==$OPENAI_VERSION" tests/sdk/test_openai_sdk.py
