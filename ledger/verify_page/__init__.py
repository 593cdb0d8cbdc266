"""The verification page (docs/verify-page.md): one static HTML file that checks a coverage
certificate, insurance card or registration certificate in the browser.

Its sources are in ``web/verify/src``; :mod:`ledger.verify_page.build` bundles them, with the
pinned @noble libraries, into ``ledger/verify_page/verify.html`` (committed);
:mod:`ledger.verify_page.http` serves that file read-only (``serve --verify-page-port``).
"""

from __future__ import annotations

import html
from importlib import resources

__all__ = ["KEY_PLACEHOLDER", "page_html", "page_with_key"]

KEY_PLACEHOLDER = '<meta name="policy-ledger-log-key" content="">'
"""The tag of the built page that :func:`page_with_key` fills with the log's verifier key."""


def page_html() -> bytes:
    """The built page, as committed (no key)."""
    return resources.files(__package__).joinpath("verify.html").read_bytes()


def page_with_key(page: bytes, log_key: str) -> bytes:
    """``page`` with the log's verifier key in its key tag: the page checks documents with it,
    and keeps it when saved to a file (its key field still lets the reader change it)."""
    text = page.decode("utf-8")
    if text.count(KEY_PLACEHOLDER) != 1:
        raise ValueError("the page has no log key tag: it was not built by ledger.verify_page")
    tag = f'<meta name="policy-ledger-log-key" content="{html.escape(log_key, quote=True)}">'
    return text.replace(KEY_PLACEHOLDER, tag).encode("utf-8")
