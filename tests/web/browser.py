"""Headless Chromium (Debian's ``chromium`` package) for the verification page's tests, and
node for its verification module: found on PATH, or the tests that need them are skipped with
the reason (``make test`` installs both: see the Makefile's ``chromium`` and ``web`` targets)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHECK_SCRIPT = WEB / "verify" / "check.mjs"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    """The chromium program, or skip."""
    program = shutil.which("chromium")
    if program is None:
        pytest.skip("chromium is not installed (Debian packages chromium, chromium-driver)")
    return program


def node_modules() -> None:
    """Skip unless node and web/node_modules (``make web``) are there."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (WEB / "node_modules" / "@noble" / "ed25519").is_dir():
        pytest.skip("web/node_modules is missing: run `make web`")


def page_url(base: str, document: bytes, lang: str = "en") -> str:
    """``base`` with the document (base64url, unpadded) and the language in its fragment."""
    encoded = base64.urlsafe_b64encode(document).decode("ascii").rstrip("=")
    return f"{base}#lang={lang}&doc={encoded}"


def _run(arguments: list[str], timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory(prefix="verify-page-chromium-") as profile:
        result = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TZ": "UTC", "LANG": "C.UTF-8"},
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def dump_dom(url: str) -> str:
    """The page's DOM once loaded (its verification runs while it loads: no waiting)."""
    return _run(["--dump-dom", url])


def screenshot(url: str, path: Path, size: str = "820,980") -> None:
    """A PNG of the page at ``url``."""
    _run([f"--screenshot={path}", f"--window-size={size}", "--hide-scrollbars", url])
    assert path.read_bytes().startswith(b"\x89PNG")


class ShownPage(HTMLParser):
    """What the page shows: the result's status, the verdict, the note, the fields, the
    document's direction and language."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.status = ""
        self.dir = ""
        self.lang = ""
        self.texts: dict[str, str] = {}
        self.fields: dict[str, str] = {}
        self._current: str | None = None
        self._field: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.dir, self.lang = attributes.get("dir") or "", attributes.get("lang") or ""
        if attributes.get("id") == "result":
            self.status = attributes.get("data-status") or ""
        if attributes.get("id") in {"verdict", "status-note", "detail", "kind"}:
            self._current = attributes["id"]
        if tag == "td" and attributes.get("data-field"):
            self._field = attributes["data-field"]

    def handle_endtag(self, tag: str) -> None:
        if tag in {"h2", "p"}:
            self._current = None
        if tag == "td":
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.texts[self._current] = self.texts.get(self._current, "") + data
        if self._field is not None:
            self.fields[self._field] = self.fields.get(self._field, "") + data

    @property
    def verdict(self) -> str:
        return self.texts.get("verdict", "")

    @property
    def note(self) -> str:
        return self.texts.get("status-note", "")


def js_verdicts(cases: list[dict[str, str]]) -> list[dict[str, object]]:
    """core.js's verdict on each case (``document``, ``key``, ``today``), run by node."""
    node_modules()
    result = subprocess.run(
        ["node", str(CHECK_SCRIPT)],
        input="".join(json.dumps(case) + "\n" for case in cases),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=WEB,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def words(text: str) -> str:
    """``text`` with runs of white space made one space."""
    return re.sub(r"\s+", " ", text).strip()


def drive(url: str, *, paste: str | None = None, file: Path | None = None) -> list[dict[str, str]]:
    """What the page shows after a person pastes ``paste`` and clicks Verify (or opens
    ``file``), then after each language button: fr, ar, en (web/verify/drive.mjs,
    playwright-core in Debian's chromium)."""
    program = chromium()
    node_modules()
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.skip("web/node_modules has no playwright-core: run `make web`")
    request = {
        "url": url,
        "chromium": program,
        "paste": paste,
        "file": None if file is None else str(file),
        "languages": ["fr", "ar", "en"],
    }
    result = subprocess.run(
        ["node", str(WEB / "verify" / "drive.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=WEB,
        env={**os.environ, "TZ": "UTC"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps: list[dict[str, str]] = json.loads(result.stdout)["steps"]
    return steps
