#!/usr/bin/env bash
# The test suite (the README's second command). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# the test extras (pytest, moto, the SageMaker SDK and inference toolkit, Playwright), java,
# which the toolkit's multi-model-server runs on, and Debian's chromium, which the page tests
# drive headless; the main job (scripts/quickstart.sh) needs none of them
start=$SECONDS
BOOTSTRAP_EXTRAS=dev,sagemaker BOOTSTRAP_APT="java:default-jre-headless chromium:chromium" \
  . scripts/bootstrap.sh
. scripts/kenlm.sh
echo "test.sh: set-up (extras, java, chromium, KenLM) took $((SECONDS - start)) s"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
