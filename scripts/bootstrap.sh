#!/usr/bin/env bash
# Idempotent set-up of everything asr-lightning needs on a fresh Debian/Ubuntu machine:
# system packages (ffmpeg for the audio decoder chain, espeak-ng to regenerate the quickstart
# corpus), a virtual environment in .venv, torch, and the package with its test extras.
# Sourced by scripts/quickstart.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q libsndfile || need_apt+=(libsndfile1)
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
python -m pip install -q -e ".[dev,sagemaker]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import asr_lightning, torch, transformers, lightning" \
  || { echo "bootstrap: the Python environment is incomplete (see pip's output above)"; exit 1; }
