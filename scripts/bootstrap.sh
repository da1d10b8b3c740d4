#!/usr/bin/env bash
# Idempotent set-up of what asr-lightning needs on a fresh Debian/Ubuntu machine: system
# packages (ffmpeg and libsndfile for the audio decoder chain, plus $BOOTSTRAP_APT), a virtual
# environment in .venv, torch, and the package with the extras in $BOOTSTRAP_EXTRAS (none for
# the main job: scripts/test.sh asks for dev,sagemaker). Sourced by scripts/quickstart.sh and
# scripts/test.sh; safe to run again. (scripts/make_quickstart_data.py also needs espeak-ng.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q libsndfile || need_apt+=(libsndfile1)
# "command:package" pairs the caller needs on top (scripts/test.sh: java for the model server)
for pair in ${BOOTSTRAP_APT:-}; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing system packages: ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; on a machine with a
# local CPU wheel of 2.13.0 this takes seconds. Override with TORCH_SPEC (e.g. a CUDA build).
python -c "import torch" 2>/dev/null || python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 \
  | grep -v "^WARNING: Location" || true
extras=${BOOTSTRAP_EXTRAS:-}
python -m pip install -q -e ".${extras:+[$extras]}" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import asr_lightning, torch, transformers, lightning" \
  || { echo "bootstrap: the Python environment is incomplete (see pip's output above)"; exit 1; }
