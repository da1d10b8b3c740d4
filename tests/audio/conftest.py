"""Fixtures of the audio tests: the bad-input corpus, made once per session."""

from __future__ import annotations

import pytest

from tests.fixtures.bad_audio import BadCase, make_bad_audio_corpus


@pytest.fixture(scope="session")
def bad_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadCase]:
    """``{case name: BadCase}`` of :mod:`tests.fixtures.bad_audio`, written once per session."""
    return make_bad_audio_corpus(tmp_path_factory.mktemp("bad_audio"))
