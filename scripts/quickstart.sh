#!/usr/bin/env bash
# The main job on the embedded default (the README's first command): train a small CTC model
# from scratch on the synthetic corpus in data/quickstart, then test it. No network needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
export HF_HUB_OFFLINE=1
asr-lightning data check data/quickstart/train.jsonl
