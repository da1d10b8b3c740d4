"""Shared fixtures: where the real speech lives, and an offline Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Real speech corpora (an4/, fsdd/) read in place, never copied into the repository.
DATA_ENV = "ASR_LIGHTNING_DATA"


def shared_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding an4/ and fsdd/ (``$ASR_LIGHTNING_DATA``, default ``../shared/data``)."""
    root = shared_data_dir()
    if not (root / "an4").is_dir():
        pytest.fail(
            f"real speech not found at {root}: set {DATA_ENV} to the folder holding an4/ and fsdd/"
        )
    return root
