"""What a SageMaker model dir holds for deployment, and how the training entry completes it.

``SM_MODEL_DIR`` becomes ``model.tar.gz``; a PyTorch inference container unpacks it into
``/opt/ml/model`` and runs ``code/inference.py`` (``SAGEMAKER_PROGRAM``) after installing
``code/requirements.txt``::

    hf_model/               Hugging Face folder (safetensors + processor), written by fit
    onnx/                   model.onnx + processor files (asr_lightning.export.onnx)
    code/inference.py       the SageMaker handler (sagemaker_entry/inference.py)
    code/requirements.txt   the runtime dependencies, torch excluded (the container has it)
    code/asr_lightning/     this package, imported by the handler
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from asr_lightning.artifacts import CODE_SUBDIR, HF_SUBDIR, ONNX_SUBDIR
from asr_lightning.errors import ConfigError

log = logging.getLogger(__name__)

HANDLER = "inference.py"
REQUIREMENTS = "requirements.txt"
#: The handler's place in the source tree (copied when present; another issue writes it).
HANDLER_SOURCE = Path("sagemaker_entry") / HANDLER
DISTRIBUTION = "asr-lightning"
PACKAGE = "asr_lightning"
#: Provided by the SageMaker PyTorch containers; installing another build would break CUDA.
_CONTAINER_PROVIDED = ("torch",)
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass(frozen=True)
class ModelDirReport:
    """What :func:`complete_model_dir` wrote."""

    hf_model: Path
    onnx: Path | None
    handler: Path | None
    requirements: Path


def runtime_requirements(source_dir: Path) -> list[str]:
    """The package's dependencies without torch, for the containers' ``requirements.txt``.

    Read from ``<source_dir>/requirements.txt`` when the launcher staged one, else from the
    installed distribution's metadata.
    """
    staged = source_dir / REQUIREMENTS
    if staged.is_file():
        lines = staged.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip() and not line.startswith("#")]
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ConfigError(
            f"cannot tell the runtime dependencies: {staged} does not exist and {DISTRIBUTION} "
            "is not installed. Launch with `asr-lightning sagemaker train` (it stages one)."
        ) from err
    return [
        req
        for req in requires
        if ";" not in req and re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0] not in _CONTAINER_PROVIDED
    ]


def write_code_dir(model_dir: Path, source_dir: Path) -> tuple[Path | None, Path]:
    """``code/``: the handler (when the source tree has it), requirements and this package.

    Returns the handler's path (``None`` when the source tree has none yet) and the
    requirements file's.
    """
    code = model_dir / CODE_SUBDIR
    code.mkdir(parents=True, exist_ok=True)
    requirements = code / REQUIREMENTS
    requirements.write_text("\n".join(runtime_requirements(source_dir)) + "\n", encoding="utf-8")
    package = Path(__file__).resolve().parent.parent
    shutil.copytree(package, code / PACKAGE, ignore=_IGNORED, dirs_exist_ok=True)
    handler_source = source_dir / HANDLER_SOURCE
    if not handler_source.is_file():
        log.warning("%s does not exist: the model dir has no code/%s", handler_source, HANDLER)
        return None, requirements
    handler = code / HANDLER
    shutil.copy2(handler_source, handler)
    return handler, requirements


def export_onnx_folder(hf_model: Path, out: Path) -> Path:
    """Exports the HF folder to ONNX (checked against PyTorch) into ``out``."""
    from asr_lightning.export.onnx import export_onnx

    report = export_onnx(hf_model, out)
    log.info("%s", report.render())
    return out


def complete_model_dir(model_dir: Path, source_dir: Path, onnx: bool = True) -> ModelDirReport:
    """Adds the ONNX export and ``code/`` next to the HF folder that ``fit`` wrote.

    Args:
        model_dir: ``SM_MODEL_DIR``, holding ``hf_model/``.
        source_dir: The uploaded source folder (holds ``sagemaker_entry/``).
        onnx: Export ``onnx/`` as well.
    """
    hf_model = model_dir / HF_SUBDIR
    if not (hf_model / "config.json").is_file():
        raise ConfigError(
            f"{hf_model} holds no Hugging Face model: fit did not save one (was hf_export "
            "disabled, or training interrupted?)"
        )
    onnx_dir = export_onnx_folder(hf_model, model_dir / ONNX_SUBDIR) if onnx else None
    handler, requirements = write_code_dir(model_dir, source_dir)
    return ModelDirReport(hf_model, onnx_dir, handler, requirements)
