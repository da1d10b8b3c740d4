"""Entry point of a SageMaker training job: the container's contract -> ``asr-lightning fit``.

SageMaker runs ``python sagemaker_entry/train.py --key value ...`` from the uploaded source
folder (or ModelTrainer's torchrun driver runs it once per GPU). This shim reads the environment,
restarts itself under ``torchrun`` when the job has several hosts or GPUs and nobody launched
the workers, runs the same LightningCLI ``fit`` a local user runs, and on global rank zero
completes the model dir (ONNX export, ``code/``). See ``asr_lightning/sagemaker/contract.py``.

Environment beyond SageMaker's ``SM_*``: ``ASR_LIGHTNING_CHECKPOINT_DIR`` (default
``/opt/ml/checkpoints``), ``ASR_LIGHTNING_SKIP_ONNX=1`` to leave the ONNX export out, and for
tests or networks where the names of ``SM_HOSTS`` do not resolve ``ASR_LIGHTNING_HOST_ADDRESSES``
(JSON host name -> address of the rendezvous) with ``SM_MASTER_PORT`` (its port).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent
# the uploaded source folder is not installed: make its package importable
if str(SOURCE_DIR) not in sys.path:
    sys.path.insert(0, str(SOURCE_DIR))

from asr_lightning.cli import main as asr_lightning_main  # noqa: E402
from asr_lightning.sagemaker import contract as sm  # noqa: E402
from asr_lightning.sagemaker.model_dir import complete_model_dir  # noqa: E402

CHECKPOINT_DIR_ENV = "ASR_LIGHTNING_CHECKPOINT_DIR"
SKIP_ONNX_ENV = "ASR_LIGHTNING_SKIP_ONNX"


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    contract = sm.contract_from_env(env, argv, checkpoint_dir=env.get(CHECKPOINT_DIR_ENV))
    if sm.needs_launcher(contract, env):
        command = sm.torchrun_command(contract, str(Path(__file__).resolve()), argv)
        print("launching:", " ".join(command), flush=True)
        return subprocess.call(command)
    args = sm.lightning_args(contract, SOURCE_DIR)
    print("asr-lightning", " ".join(args), flush=True)
    sys.argv = [sys.argv[0], *args]  # what LightningCLI reads, as if typed by a user
    status = asr_lightning_main(args)
    if status != 0 or int(env.get("RANK", "0")) != 0:
        return status
    report = complete_model_dir(
        Path(contract.model_dir), SOURCE_DIR, onnx=env.get(SKIP_ONNX_ENV) != "1"
    )
    print(f"model dir complete: {report}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
