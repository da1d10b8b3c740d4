#!/usr/bin/env bash
# The main job on the embedded default (the README's first command): check the synthetic corpus
# in data/quickstart, train a small CTC model on it from scratch, score it on the test voices,
# and transcribe a clip with the exported Hugging Face folder. No network needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
. scripts/bootstrap.sh
echo "quickstart: set-up took $((SECONDS - start)) s"
export HF_HUB_OFFLINE=1
bar=false; [ -t 1 ] && bar=true  # a progress bar on a terminal, plain logs in CI
rm -rf runs/quickstart  # a fresh run each time (a best.ckpt left over would become best-v1)
asr-lightning data check data/quickstart/train.jsonl --min-duration 0.3
asr-lightning fit --config configs/quickstart.yaml --trainer.enable_progress_bar $bar
asr-lightning test --config configs/quickstart.yaml --trainer.enable_progress_bar $bar \
  --ckpt_path runs/quickstart/checkpoints/best.ckpt
echo "quickstart: set-up, check, fit and test took $((SECONDS - start)) s"
asr-lightning transcribe runs/quickstart/hf_model "$(ls data/quickstart/audio/test-*.opus | head -1)" --json
