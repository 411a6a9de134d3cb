#!/usr/bin/env bash
# The OpenAI Python SDK's Azure clients against `ftsweep serve --protocol azure`, from the repository
# root: `bash tests/sdk/azure.sh`. Makes a venv with the `openai` that tests/sdk/run.sh pins (needs
# PyPI; set FTSWEEP_SDK_VENV to reuse a venv), starts target/debug/ftsweep (built if missing) on a
# free port with a temporary state file, runs tests/sdk/test_azure_sdk.py, and stops the server
# (tests/sdk/lib.sh). Exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPENAI_VERSION=$(sed -n 's/^OPENAI_VERSION=//p' tests/sdk/run.sh)
source tests/sdk/lib.sh
sdk_check "openai==$OPENAI_VERSION" tests/sdk/test_azure_sdk.py \
    --protocol azure --deployment-delay-ms 300 --file-delay-ms 200
