"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Playwright.

``scripts/test.sh`` installs both (the ``chromium`` package through ``BOOTSTRAP_APT``,
``playwright`` in the dev extra); Playwright's own browser download is never used, so the
tests run without a network. :func:`open_page` yields a page that records every console error
and uncaught exception, which the tests assert are empty.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The system browser; ``CHROMIUM`` overrides it.
CHROMIUM_ENV = "CHROMIUM"
#: What a sandboxed, offline CI machine needs: no sandbox (root), no GPU, and no background
#: connections (a closed network refuses them, many at a time).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str:
    """The Chromium binary, or an error saying how to install it."""
    found = (
        os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        raise RuntimeError(
            "no chromium binary: run scripts/test.sh (it installs Debian's chromium), "
            f"or set {CHROMIUM_ENV}=/path/to/chromium"
        )
    return found


def fake_microphone_args(wav: Path) -> list[str]:
    """Chromium flags that grant the microphone and feed it ``wav`` (16-bit PCM WAV)."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


@dataclass
class PageErrors:
    """Console errors and uncaught page exceptions, as text."""

    messages: list[str] = field(default_factory=list)


@contextmanager
def open_page(extra_args: Sequence[str] = ()) -> Iterator[tuple[Any, PageErrors]]:
    """A fresh headless Chromium page and the errors it logs."""
    from playwright.sync_api import sync_playwright

    errors = PageErrors()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda message: message.type == "error" and errors.messages.append(message.text),
            )
            page.on("pageerror", lambda error: errors.messages.append(f"uncaught: {error}"))
            yield page, errors
        finally:
            browser.close()
