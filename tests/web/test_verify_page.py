"""The verification page (docs/verify-page.md): built reproducibly, served read-only by a real
server, and driven in headless Chromium with a real certificate, a tampered one and an expired
one, in English, French and Arabic; its verification module gives the Python offline
verifier's verdict on the same inputs."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients import samples
from clients.certificate import CertificateClient
from clients.insurer import InsurerClient
from clients.offline.certificate import (
    _RELATIONSHIPS as RELATIONSHIPS,
)
from clients.offline.certificate import (
    CertificateBundle,
    CertificateError,
    load_bundle,
    verify_certificate,
)
from clients.verify import TrustedLog
from ledger import limits
from ledger.errors import FailedPrecondition
from ledger.note import sign_note
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url
from ledger.v1 import events_pb2
from ledger.verify_page import KEY_PLACEHOLDER, page_html, page_with_key
from ledger.verify_page.http import PAGE_PATH, VerifyPageEndpoint
from tests.builders import issued, tokens
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.durability.processes import start_server_process
from tests.web.browser import (
    ROOT,
    ShownPage,
    drive,
    dump_dom,
    js_verdicts,
    node_modules,
    page_url,
    screenshot,
    words,
)

GULF = "gulf-health"


@dataclass
class World:
    """A real server with its verification page, and certificates it issued."""

    server: ServerHandle
    page_port: int
    today: dt.date
    current: CertificateBundle
    """A certificate of a policy issued today, for a year."""
    expired: CertificateBundle
    """A certificate of a policy that ended 40 days ago (stated on a day it covered)."""

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.page_port}{PAGE_PATH}"


@pytest.fixture(scope="module")
def world(
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """One server for the module: the page reads no database and writes nothing, so one engine
    (SQLite) is enough; the certificates are real, issued over gRPC."""
    directory = tmp_path_factory.mktemp("verify-page")
    server = start_server_thread(
        sqlite_url(directory / "ledger.db"),
        log_signer,
        directory,
        config_changes={"verify_page_port": 0},
    )
    try:
        onboard(server, operator_signer, GULF, insurer_signer)
        now = dt.datetime.now(dt.UTC)
        today = now.date()
        log = TrustedLog.from_verifier_key(server.log_verifier_key)
        old_sponsor = samples.iqama(40)
        ended = issued(
            GULF,
            "POL-ENDED",
            old_sponsor,
            [(old_sponsor, events_pb2.RELATIONSHIP_SELF)],
            today - dt.timedelta(days=400),
            today - dt.timedelta(days=40),
        )
        with server.channel("insurer", GULF) as channel:
            insurer = InsurerClient(channel, signer=insurer_signer, log=log)
            insurer.submit(samples.policy_issued(1, GULF, now, tokens=tokens))
            insurer.submit(ended)
        with server.channel("operator", "operator") as channel:
            client = CertificateClient(channel, log_key=server.log_verifier_key)
            [current] = client.get(samples.iqama(16), today)
            [expired] = client.get(old_sponsor, today - dt.timedelta(days=100))
        assert server.running.verify_page is not None
        yield World(server, server.running.verify_page.port, today, current.bundle, expired.bundle)
    finally:
        server.stop()


def tampered(note: bytes) -> bytes:
    """``note`` with its plan changed (the signature no longer covers its text)."""
    assert b"\nplan CCHI-BASIC\n" in note
    return note.replace(b"\nplan CCHI-BASIC\n", b"\nplan CCHI-GOLD\n")


# -- what a person sees, in headless Chromium -----------------------------------------------


def test_a_real_certificate_is_shown_valid_with_who_by_whom_and_until_when(world: World) -> None:
    note = world.current.certificate
    statement = verify_certificate(note, world.server.log_verifier_key)
    shown = ShownPage(dump_dom(page_url(world.page, note, "en")))
    assert shown.status == "valid"
    assert shown.verdict == "Valid as issued: check its status online"
    assert (shown.lang, shown.dir) == ("en", "ltr")
    assert shown.fields["Person"] == statement.person
    assert shown.fields["Insurer"] == GULF
    assert shown.fields["Policy"] == "POL-00000001"
    assert shown.fields["Valid until"] == statement.end.isoformat()
    assert shown.fields["Issued at tree size"] == str(statement.tree_size)
    assert shown.fields["Checked"] == "signature, inclusion proof"
    assert f"tree size {statement.tree_size}" in shown.note
    assert "check its status online" in words(shown.note)


def test_a_bundle_file_also_checks_its_checkpoint_and_entry(world: World) -> None:
    bundle = world.current.to_json().encode("utf-8")
    shown = ShownPage(dump_dom(page_url(world.page, bundle, "fr")))
    assert shown.status == "valid"
    assert shown.verdict == "Valable tel qu'émis : vérifiez son statut en ligne"
    assert shown.fields["Checked"] == "signature, preuve d'inclusion, point de contrôle, entrée"


def test_a_tampered_certificate_is_refused_in_arabic_right_to_left(world: World) -> None:
    shown = ShownPage(dump_dom(page_url(world.page, tampered(world.current.certificate), "ar")))
    assert shown.status == "invalid"
    assert (shown.lang, shown.dir) == ("ar", "rtl")
    assert shown.verdict == "غير صالحة: لا تقبل هذه الوثيقة"
    assert shown.note == "التوقيع لا يطابق الوثيقة: لقد تم تعديلها."
    assert "does not verify" in shown.texts["detail"]
    assert not shown.fields  # nothing of a refused document is shown as if it were true


def test_an_expired_certificate_is_shown_expired(world: World) -> None:
    note = world.expired.certificate
    statement = verify_certificate(note, world.server.log_verifier_key)
    assert statement.end == world.today - dt.timedelta(days=40)
    shown = ShownPage(dump_dom(page_url(world.page, note, "fr")))
    assert shown.status == "expired"
    assert shown.verdict == "EXPIRÉ"
    assert shown.fields["Valid until"] == statement.end.isoformat()
    assert statement.end.isoformat() in shown.note and "a expiré" in shown.note


def test_the_page_saved_as_one_file_works_offline(world: World, tmp_path: Path) -> None:
    """The served page, saved: no outside reference, and it verifies from file:// alone."""
    saved = tmp_path / "verify.html"
    saved.write_bytes(_get(world, PAGE_PATH).read())
    text = saved.read_text(encoding="utf-8")
    assert "src=" not in text and "href=" not in text  # no script, style or link to fetch
    shown = ShownPage(dump_dom(page_url(saved.as_uri(), world.current.certificate, "en")))
    assert shown.status == "valid"
    shown = ShownPage(dump_dom(page_url(saved.as_uri(), tampered(world.current.certificate))))
    assert shown.status == "invalid"


def test_another_logs_key_refuses_the_certificate(world: World, tmp_path: Path) -> None:
    stranger = format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    page = tmp_path / "stranger.html"
    page.write_bytes(page_with_key(page_html(), stranger))
    shown = ShownPage(dump_dom(page_url(page.as_uri(), world.current.certificate)))
    assert shown.status == "invalid"
    assert shown.note == "This document is not signed by this log's key."


# -- the same verdicts as the Python offline verifier ----------------------------------------


def _python_verdict(document: bytes, key: str, today: dt.date) -> str:
    try:
        bundle = load_bundle(document)
        statement = verify_certificate(
            bundle.certificate, key, checkpoint=bundle.checkpoint, entry=bundle.entry
        )
    except CertificateError:
        return "invalid"
    return "valid" if statement.covers(today) or today < statement.start else "expired"


def _flip_signature_bit(note: bytes) -> bytes:
    text, _, signature_line = note.rstrip(b"\n").rpartition(b"\n")
    name, _, encoded = signature_line.rpartition(b" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    return text + b"\n" + name + b" " + base64.b64encode(bytes(raw)) + b"\n"


def test_javascript_and_python_give_the_same_verdicts(
    world: World, log_signer: Ed25519Signer
) -> None:
    node_modules()
    key = world.server.log_verifier_key
    note = world.current.certificate
    bundle = world.current
    stranger = format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    other_entry = CertificateBundle(note, bundle.checkpoint, (bundle.entry or b"") + b"x")
    expired_bundle = world.expired
    statement = verify_certificate(note, key)
    other_root = sign_note(
        f"{log_signer.name}\n{statement.tree_size}\n{base64.b64encode(bytes(32)).decode()}\n",
        [log_signer],
    )
    wrong_checkpoint = CertificateBundle(note, other_root, bundle.entry)
    lines = note.decode().split("\n")
    proof_at = next(i for i, line in enumerate(lines) if line.startswith("root "))
    cases: list[tuple[str, bytes, str]] = [
        ("the note", note, key),
        ("the bundle", bundle.to_json().encode(), key),
        ("the expired note", expired_bundle.certificate, key),
        ("the expired bundle", expired_bundle.to_json().encode(), key),
        ("tampered text", tampered(note), key),
        ("flipped signature bit", _flip_signature_bit(note), key),
        ("another log's key", note, stranger),
        ("another entry", other_entry.to_json().encode(), key),
        ("a checkpoint of another root", wrong_checkpoint.to_json().encode(), key),
        ("truncated", note[: len(note) // 2], key),
        ("empty", b"", key),
        ("not a note", b"hello\n", key),
        ("no signature", note.split(b"\n\n")[0] + b"\n", key),
        ("a line dropped", "\n".join(lines[:3] + lines[4:]).encode(), key),
        (
            "the root replaced",
            "\n".join(
                [
                    *lines[:proof_at],
                    "root " + base64.b64encode(bytes(32)).decode(),
                    *lines[proof_at + 1 :],
                ]
            ).encode(),
            key,
        ),
        ("a bundle of another format", b'{"format": "x", "certificate": ""}', key),
    ]
    today = world.today
    js = js_verdicts(
        [
            {"document": document.decode("utf-8", "replace"), "key": k, "today": today.isoformat()}
            for _, document, k in cases
        ]
    )
    python = [_python_verdict(document, k, today) for _, document, k in cases]
    observed = {name: verdict["status"] for (name, _, _), verdict in zip(cases, js, strict=True)}
    expected = {name: verdict for (name, _, _), verdict in zip(cases, python, strict=True)}
    assert observed == expected
    # And the cases do differ: two valid, two expired, the rest refused.
    assert list(python[:4]) == ["valid", "valid", "expired", "expired"]
    assert set(python[4:]) == {"invalid"}


def test_javascript_reads_the_fields_python_reads(world: World) -> None:
    node_modules()
    statement = verify_certificate(world.current.certificate, world.server.log_verifier_key)
    [verdict] = js_verdicts(
        [
            {
                "document": world.current.certificate.decode(),
                "key": world.server.log_verifier_key,
                "today": world.today.isoformat(),
            }
        ]
    )
    fields = verdict["fields"]
    assert isinstance(fields, dict)
    assert fields["person"] == statement.person
    assert fields["person-token"] == statement.person_token
    assert fields["insurer"] == statement.insurer
    assert fields["policy"] == statement.policy
    assert fields["plan"] == statement.plan
    assert fields["period"] == {"start": str(statement.start), "end": str(statement.end)}
    assert fields["relationship"] == statement.relationship
    assert fields["tree-size"] == str(statement.tree_size)


# -- the read-only listener ------------------------------------------------------------------


def _get(world: World, path: str, method: str = "GET") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", world.page_port, timeout=30)
    connection.request(method, path)
    return connection.getresponse()


def test_the_listener_serves_the_page_with_the_log_key_and_a_strict_policy(world: World) -> None:
    response = _get(world, PAGE_PATH)
    body = response.read()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    key_tag = f'<meta name="policy-ledger-log-key" content="{world.server.log_verifier_key}">'
    assert key_tag.encode() in body
    policy = response.getheader("Content-Security-Policy") or ""
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    head = _get(world, PAGE_PATH, "HEAD")
    assert head.status == 200 and head.read() == b""
    assert head.getheader("Content-Length") == str(len(body))
    redirect = _get(world, "/")
    assert (redirect.status, redirect.getheader("Location")) == (302, PAGE_PATH)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/verify/../../etc/passwd", 404),
        ("GET", "/metrics", 404),
        ("GET", "/verify/verify.html", 404),
        ("GET", "/" + "a" * limits.verify_page_path_chars_max, 414),
        ("POST", PAGE_PATH, 405),
        ("PUT", PAGE_PATH, 405),
        ("DELETE", PAGE_PATH, 405),
    ],
)
def test_the_listener_serves_nothing_else(
    world: World, method: str, path: str, status: int
) -> None:
    size = world.server.running.sequencer.tree_size
    response = _get(world, path, method)
    assert response.status == status
    assert b"<html" not in response.read()
    assert world.server.running.sequencer.tree_size == size  # nothing was written


def test_a_page_port_in_use_is_refused(world: World) -> None:
    with pytest.raises(FailedPrecondition, match="--verify-page-port"):
        VerifyPageEndpoint("127.0.0.1", world.page_port, world.server.log_verifier_key)


def test_connections_over_the_cap_are_closed_unanswered(world: World) -> None:
    """The listener answers at most verify_page_connections_max connections at once."""
    held = [
        socket.create_connection(("127.0.0.1", world.page_port), timeout=30)
        for _ in range(limits.verify_page_connections_max)
    ]
    try:
        for connection in held:  # each has its thread (a byte sent: it is being read)
            connection.sendall(b"G")
        extra = socket.create_connection(("127.0.0.1", world.page_port), timeout=30)
        with extra:
            extra.sendall(b"GET /verify/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(100) == b""  # closed, unanswered
    finally:
        for connection in held:
            connection.close()


# -- the build -------------------------------------------------------------------------------


def test_the_committed_page_is_what_the_build_makes() -> None:
    """``python -m ledger.verify_page.build`` from the sources and the pinned libraries gives
    the committed file, byte for byte."""
    node_modules()
    from ledger.verify_page.build import build_page

    assert build_page().encode("utf-8") == page_html()
    assert page_html().count(KEY_PLACEHOLDER.encode()) == 1


def test_the_catalogue_has_every_message_the_page_shows() -> None:
    from ledger.verify_page.build import SOURCES, catalogue

    messages = catalogue()
    script = (SOURCES / "src" / "page.js").read_text(encoding="utf-8")
    template = (SOURCES / "src" / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r'\bt\(\s*"([^"]+)"', script))
    used |= set(re.findall(r'data-i18n="([^"]+)"', template))
    used |= set(re.findall(r'^\s+(?:[\w"-]+): "([^"]+)",$', script, re.MULTILINE))
    used |= set(re.findall(r'\brow\(table, "([^"]+)"', script))
    assert {"Person", "Insurer", "Valid until", "Issued at tree size"} <= used
    used |= {f"relationship: {name}" for name in RELATIONSHIPS}
    used |= {"signature", "inclusion proof", "checkpoint", "entry", ", "}
    for language in ("fr", "ar"):
        assert used - set(messages[language]) == set(), language
    relationships = {message for message in used if message.startswith("relationship: ")}
    assert relationships and relationships <= set(messages["en"])


# -- screenshots (docs/verify-page-*.png) -----------------------------------------------------


def test_screenshots_of_each_verdict(world: World, tmp_path: Path) -> None:
    """A screenshot of the page for a real, a tampered and an expired certificate (written to
    docs/ when POLICY_LEDGER_VERIFY_PAGE_SCREENSHOTS=docs: that is how the shipped ones were
    made)."""
    out = tmp_path
    if os.environ.get("POLICY_LEDGER_VERIFY_PAGE_SCREENSHOTS") == "docs":
        out = ROOT / "docs"
    shots = {
        "valid": (world.current.certificate, "en"),
        "tampered": (tampered(world.current.certificate), "ar"),
        "expired": (world.expired.certificate, "fr"),
    }
    for name, (document, lang) in shots.items():
        path = out / f"verify-page-{name}.png"
        screenshot(page_url(world.page, document, lang), path)
        assert path.stat().st_size > 10_000


# -- `serve --verify-page-port` ----------------------------------------------------------------


def test_serve_verify_page_port_and_a_port_in_use(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    """The flag, as an operator runs it: the page is served with the log key; a second server
    asking for the same port refuses to start, says why, and opens no database."""
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    server = start_server_process(
        sqlite_url(tmp_path / "ledger.db"),
        key_file,
        tmp_path,
        extra_arguments=["--verify-page-port", "0"],
    )
    try:
        assert server.process.stdout is not None
        line = server.process.stdout.readline()
        assert line.startswith("verification page on port "), line
        port = int(line.split()[-1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", PAGE_PATH)
        response = connection.getresponse()
        assert response.status == 200
        assert format_verifier_key(log_signer).encode() in response.read()
        other = subprocess.run(
            [sys.executable, "-m", "policy_ledger.cli", "serve", "--database",
             sqlite_url(tmp_path / "other.db"), "--listen", "127.0.0.1:0",
             "--log-key-file", str(key_file), "--insecure-plaintext",
             "--operator-verifier", format_verifier_key(Ed25519Signer.generate("operator")),
             "--verify-page-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert other.returncode == 2, other.stderr
        assert f"cannot serve the verification page on port {port}" in other.stderr
        assert "Traceback" not in other.stderr
        assert not (tmp_path / "other.db").exists()
    finally:
        server.stop()


def test_a_link_whose_document_is_not_base64_is_refused(world: World) -> None:
    shown = ShownPage(dump_dom(f"{world.page}#lang=en&doc=%%%not-base64%%%"))
    assert shown.status == "invalid"
    assert shown.note == "This is not a well-formed document of this log."


# -- as a person uses it: paste, click, switch language (playwright-core) ---------------------


def test_a_person_pastes_a_certificate_and_switches_language(world: World) -> None:
    steps = drive(world.page, paste=world.current.certificate.decode("utf-8"))
    assert [(s["lang"], s["dir"], s["status"]) for s in steps] == [
        ("en", "ltr", "valid"),
        ("fr", "ltr", "valid"),
        ("ar", "rtl", "valid"),
        ("en", "ltr", "valid"),
    ]
    assert [s["verdict"] for s in steps] == [
        "Valid as issued: check its status online",
        "Valable tel qu'émis : vérifiez son statut en ligne",
        "صالحة كما صدرت: تحقّق من حالتها عبر الإنترنت",
        "Valid as issued: check its status online",
    ]


def test_a_person_opens_a_tampered_bundle_file(world: World, tmp_path: Path) -> None:
    bundle = json.loads(world.current.to_json())
    bundle["certificate"] = tampered(bundle["certificate"].encode()).decode()
    path = tmp_path / "card.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    steps = drive(world.page, file=path)
    assert {s["status"] for s in steps} == {"invalid"}
    assert steps[0]["note"] == "The signature does not match the document: it was altered."
    assert steps[2]["note"] == "التوقيع لا يطابق الوثيقة: لقد تم تعديلها."
