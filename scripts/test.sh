#!/usr/bin/env bash
# The test suite (the README's second command). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# the test extras (pytest, moto, the SageMaker SDK and inference toolkit) and java, which the
# toolkit's multi-model-server runs on; the main job (scripts/quickstart.sh) needs neither
start=$SECONDS
BOOTSTRAP_EXTRAS=dev,sagemaker BOOTSTRAP_APT="java:default-jre-headless" . scripts/bootstrap.sh
. scripts/kenlm.sh
echo "test.sh: set-up (extras, java, KenLM) took $((SECONDS - start)) s"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
