"""Build the verification page: ``python -m ledger.verify_page.build [--out FILE]``.

Bundles ``web/verify/src/page.js`` (with ``core.js`` and the pinned ``@noble/ed25519`` and
``@noble/hashes`` of ``web/package-lock.json``) with esbuild, also pinned there, into one
script; inlines it, ``style.css`` and the message catalogue (``web/verify/locales/*.po``, read
with Babel) into ``src/index.html``. The result is one HTML file with no outside reference:
served by ``serve --verify-page-port``, and usable saved as a file, offline. The output is a
function of the sources and the pinned versions only (tests/web checks the committed file is).
Needs ``web/node_modules``: ``make web``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from babel.messages.pofile import read_po

__all__ = ["build_page", "main"]

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
SOURCES = WEB / "verify"
OUTPUT = Path(__file__).resolve().parent / "verify.html"
LANGUAGES = ("en", "fr", "ar")
"""The catalogues (the message ids are the English text: en.po has only the few that differ)."""


def catalogue() -> dict[str, dict[str, str]]:
    """``{language: {English text: translation}}`` from ``web/verify/locales/<language>.po``."""
    messages: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        with (SOURCES / "locales" / f"{language}.po").open("rb") as handle:
            po = read_po(handle, locale=language)
        messages[language] = {
            str(message.id): str(message.string)
            for message in po
            if message.id and message.string and not message.fuzzy
        }
    return messages


def bundle() -> str:
    """page.js and what it imports, one IIFE script (esbuild from web/node_modules)."""
    esbuild = WEB / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise FileNotFoundError(f"{esbuild} is missing: run `make web` (npm install in web/)")
    result = subprocess.run(  # noqa: S603 - a fixed program and arguments
        [
            str(esbuild),
            "verify/src/page.js",
            "--bundle",
            "--format=iife",
            "--target=es2020",
            "--charset=utf8",
            "--legal-comments=inline",
            "--log-level=warning",
        ],
        cwd=WEB,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout


def build_page() -> str:
    """The page's HTML."""
    template = (SOURCES / "src" / "index.html").read_text(encoding="utf-8")
    style = (SOURCES / "src" / "style.css").read_text(encoding="utf-8")
    # In a <script> element only "</" could end it early: JSON and the bundle escape it.
    messages = json.dumps(catalogue(), ensure_ascii=False, sort_keys=True, indent=1)
    script = bundle()
    for text in (messages, script):
        if "</script" in text.lower():
            raise ValueError("a script of the page contains '</script'")
    return (
        template.replace("/*STYLE*/\n", style)
        .replace("/*CATALOGUE*/", messages.replace("</", "<\\/"))
        .replace("/*SCRIPT*/\n", script)
    )


def main(argv: list[str] | None = None) -> int:
    """Write the page to --out (default: the committed ledger/verify_page/verify.html)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write the page")
    args = parser.parse_args(argv)
    args.out.write_text(build_page(), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
