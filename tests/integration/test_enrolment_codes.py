"""Enrolment codes in storage: only a hash is kept; single use, expiry, 5 wrong tries."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from ledger import limits
from ledger.enrolment import code_hash, new_code, parse_ttl
from ledger.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from ledger.storage.db import create_ledger_engine
from ledger.storage.enrolment_store import (
    EnrolmentStore,
    enrolment_codes,
    enrolment_redemptions,
    enrolment_wrong_codes,
)
from policy_ledger.cli import main

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


@pytest.fixture
def store(engine: Engine) -> EnrolmentStore:
    return EnrolmentStore(engine)


def test_the_right_code_checks_once_and_then_is_used(store: EnrolmentStore) -> None:
    code = new_code()
    code_id = store.issue("insurer", "acme-health", code, NOW, DAY)
    checked = store.check("insurer", "acme-health", code, NOW + dt.timedelta(hours=1))
    assert (checked.code_id, checked.role, checked.name) == (code_id, "insurer", "acme-health")
    assert checked.expires_at == NOW + DAY
    store.redeem(code_id, "01ab", NOW)
    with pytest.raises(PermissionDenied) as refused:
        store.check("insurer", "acme-health", code, NOW)
    assert refused.value.reason == "CODE_USED"
    with pytest.raises(PermissionDenied):  # a race lost at the last step: the primary key
        store.redeem(code_id, "02cd", NOW)


def test_only_the_hash_of_a_code_is_stored(store: EnrolmentStore, engine: Engine) -> None:
    code = new_code()
    store.issue("insurer", "acme-health", code, NOW, DAY)
    with engine.connect() as connection:
        row = connection.execute(select(enrolment_codes)).one()
    assert row.code_sha256 == code_hash(code)
    assert code not in repr(tuple(row))


def test_a_wrong_code_is_counted_and_the_code_stays_unused(
    store: EnrolmentStore, engine: Engine
) -> None:
    code_id = store.issue("insurer", "acme-health", new_code(), NOW, DAY)
    with pytest.raises(Unauthenticated) as refused:
        store.check("insurer", "acme-health", new_code(), NOW)
    assert refused.value.reason == "CODE_WRONG"
    assert store.wrong_tries(code_id) == 1
    assert not store.is_redeemed(code_id)
    assert _count(engine, enrolment_redemptions) == 0


def test_a_party_without_a_code_or_of_another_role_is_refused(store: EnrolmentStore) -> None:
    code = new_code()
    store.issue("insurer", "acme-health", code, NOW, DAY)
    for role, name in (("portal", "acme-health"), ("insurer", "gulf-health")):
        with pytest.raises(Unauthenticated) as refused:
            store.check(role, name, code, NOW)
        assert refused.value.reason == "CODE_WRONG"


def test_after_five_wrong_codes_even_the_right_one_is_refused(
    store: EnrolmentStore, engine: Engine
) -> None:
    code = new_code()
    code_id = store.issue("insurer", "acme-health", code, NOW, DAY)
    for _ in range(limits.enrolment_wrong_codes_max):
        with pytest.raises(Unauthenticated):
            store.check("insurer", "acme-health", new_code(), NOW)
    for attempt in (code, new_code()):
        with pytest.raises(ResourceExhausted) as refused:
            store.check("insurer", "acme-health", attempt, NOW)
        assert refused.value.reason == "ENROLMENT_TRIES_EXHAUSTED"
    # Tries after the lock are not counted (nothing written) and the code is not used.
    assert store.wrong_tries(code_id) == limits.enrolment_wrong_codes_max
    assert not store.is_redeemed(code_id)
    # A new code from the operator gives fresh tries.
    fresh = new_code()
    store.issue("insurer", "acme-health", fresh, NOW + dt.timedelta(seconds=1), DAY)
    assert store.check("insurer", "acme-health", fresh, NOW).name == "acme-health"
    assert _count(engine, enrolment_wrong_codes) == limits.enrolment_wrong_codes_max


def test_concurrent_wrong_codes_never_count_past_the_limit(store: EnrolmentStore) -> None:
    code_id = store.issue("insurer", "acme-health", new_code(), NOW, DAY)
    tries = 3 * limits.enrolment_wrong_codes_max

    def attempt(_: int) -> str:
        try:
            store.check("insurer", "acme-health", new_code(), NOW)
        except (Unauthenticated, ResourceExhausted) as error:
            return error.reason
        return "accepted"

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(attempt, range(tries)))
    assert reasons.count("CODE_WRONG") == limits.enrolment_wrong_codes_max
    assert reasons.count("ENROLMENT_TRIES_EXHAUSTED") == tries - limits.enrolment_wrong_codes_max
    assert store.wrong_tries(code_id) == limits.enrolment_wrong_codes_max


def test_an_expired_code_is_refused_and_stays_unused(store: EnrolmentStore) -> None:
    code = new_code()
    code_id = store.issue("insurer", "acme-health", code, NOW, DAY)
    with pytest.raises(Unauthenticated) as refused:
        store.check("insurer", "acme-health", code, NOW + DAY)
    assert refused.value.reason == "CODE_EXPIRED"
    assert not store.is_redeemed(code_id)
    assert store.wrong_tries(code_id) == 0


def test_a_new_code_replaces_the_old_one(store: EnrolmentStore) -> None:
    old, new = new_code(), new_code()
    store.issue("insurer", "acme-health", old, NOW, DAY)
    store.issue("insurer", "acme-health", new, NOW + dt.timedelta(seconds=1), DAY)
    with pytest.raises(Unauthenticated):
        store.check("insurer", "acme-health", old, NOW + dt.timedelta(seconds=2))
    store.check("insurer", "acme-health", new, NOW + dt.timedelta(seconds=2))


def test_enrolment_tables_are_append_only(store: EnrolmentStore, engine: Engine) -> None:
    code_id = store.issue("insurer", "acme-health", new_code(), NOW, DAY)
    with pytest.raises(Unauthenticated):
        store.check("insurer", "acme-health", new_code(), NOW)
    store.redeem(code_id, "01ab", NOW)
    for statement in (
        "UPDATE enrolment_codes SET expires_at_us = 0",
        "DELETE FROM enrolment_codes",
        "DELETE FROM enrolment_wrong_codes",
        "DELETE FROM enrolment_redemptions",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert store.is_redeemed(code_id)
    assert store.wrong_tries(code_id) == 1


@pytest.mark.parametrize(
    ("text_ttl", "expected"),
    [("30m", dt.timedelta(minutes=30)), ("24h", DAY), ("7d", 7 * DAY)],
)
def test_time_to_live_forms(text_ttl: str, expected: dt.timedelta) -> None:
    assert parse_ttl(text_ttl) == expected


@pytest.mark.parametrize("text_ttl", ["", "0h", "24", "1w", "-1d", "31d", "1.5h"])
def test_bad_time_to_live_is_refused(text_ttl: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_ttl(text_ttl)


def test_enrol_issue_prints_the_code_once_and_stores_its_hash(database_url: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["enrol", "issue", "--role", "insurer", "--name", "acme-health", "--ttl", "24h",
             "--database", database_url]
        )  # fmt: skip
    assert code == 0
    printed = out.getvalue().strip()
    assert len(printed) == 32  # 20 bytes, base32
    assert "insurer/acme-health" in err.getvalue()
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(select(enrolment_codes)).one()
        assert (row.role, row.name, row.code_sha256) == (
            "insurer",
            "acme-health",
            code_hash(printed),
        )
        assert row.expires_at_us - row.issued_at_us == 24 * 3600 * 1_000_000
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "options",
    [
        ["--role", "insurer", "--name", "../etc", "--ttl", "24h"],
        ["--role", "insurer", "--name", "acme-health", "--ttl", "90d"],
    ],
)
def test_enrol_issue_refuses_bad_options_and_writes_nothing(
    database_url: str, options: list[str]
) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["enrol", "issue", *options, "--database", database_url])
    assert code == 2
    assert "error:" in err.getvalue()
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = engine.dialect.get_table_names(connection)
            if "enrolment_codes" in tables:
                assert _count(engine, enrolment_codes) == 0
    finally:
        engine.dispose()
