#!/usr/bin/env bash
# The test suite (the README's second command). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
. scripts/kenlm.sh
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
