"""The operator grants a person (role beneficiary) more people to resolve (docs/privacy.md, "A
person asking for tokens"; AdminService.GetBeneficiaryResolutions /
GrantBeneficiaryResolutions), on SQLite and PostgreSQL: a person at the bound is refused, the
operator grants N, the person resolves N more and is refused at the N+1th; every bad grant is
refused with its reason and writes nothing; a grant is made once per request id (a retry is
answered without a second grant, a reuse for another grant is refused writing nothing, calls at
once with one id grant once); only the operator may call either RPC; a grant survives a
restart; the command line reads and grants, printing the request id it retries with; a person
erased through the server keeps their grants and bound, without the reasons (table, RPC, CLI)."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from clients.operator import OperatorClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.cli_flags import person_text
from ledger.signing import Ed25519Signer
from ledger.storage.resolution_grants import beneficiary_resolution_grants
from ledger.v1 import admin_service_pb2 as admin
from ledger.v1 import admin_service_pb2_grpc as admin_grpc
from ledger.v1 import identity_service_pb2 as identity
from ledger.v1 import identity_service_pb2_grpc as identity_grpc
from ledger.v1 import types_pb2
from tests.builders import person
from tests.conftest import OPERATOR_SIGNER, ServerHandle, start_server_thread
from tests.stack import row_counts

BORN = dt.date(1980, 1, 1)
SELF = 1
"""The serial of the person who calls as a beneficiary."""
REASON = "ticket 4411: slots spent on typos"
OPERATOR = "spiffe://policy-ledger.local/operator/operator"
UNKNOWN_TOKEN = "pt_" + "a" * 26
"""A token of the right form that the vault never issued."""
REQUEST_ID = "ticket-4411-1"
_REQUEST_NUMBERS = itertools.count(1)


def _tokens(channel: grpc.Channel, serials: Sequence[int]) -> list[str]:
    """GetPersonTokens for ``serials``, each with the birth date a beneficiary must give."""
    born = types_pb2.CivilDate(year=BORN.year, month=BORN.month, day=BORN.day)
    request = identity.GetPersonTokensRequest(
        people=[person(serial) for serial in serials], birth_dates=[born] * len(serials)
    )
    answer = identity_grpc.IdentityServiceStub(channel).GetPersonTokens(request, timeout=30)
    return list(answer.person_tokens)


def _me(server: ServerHandle) -> str:
    """The calling person's token (an insurer tokenized them first, as a fund does)."""
    with server.channel("insurer", "gulf-health") as channel:
        return _tokens(channel, [SELF])[0]


def _resolve(server: ServerHandle, me: str, serials: Sequence[int]) -> list[str]:
    with server.channel("beneficiary", me) as channel:
        return _tokens(channel, serials)


_Request = admin.GrantBeneficiaryResolutionsRequest | admin.GetBeneficiaryResolutionsRequest


def _call(
    server: ServerHandle,
    method: str,
    request: _Request,
    caller: tuple[str, str] = ("operator", "operator"),
) -> admin.BeneficiaryResolutions:
    """AdminService's ``method`` as ``caller`` (role, name); the answer's resolutions."""
    with server.channel(*caller) as channel:
        answer = getattr(admin_grpc.AdminServiceStub(channel), method)(request, timeout=30)
    return answer.resolutions  # type: ignore[no-any-return]


def _grant(
    server: ServerHandle,
    token: str,
    additional: int,
    reason: str = REASON,
    request_id: str | None = None,
) -> admin.BeneficiaryResolutions:
    """A grant with ``request_id``, or else a new one."""
    request = admin.GrantBeneficiaryResolutionsRequest(
        person_token=token,
        additional=additional,
        reason=reason,
        request_id=request_id or f"e2e-grant-{next(_REQUEST_NUMBERS):04d}",
    )
    return _call(server, "GrantBeneficiaryResolutions", request)


def _read(server: ServerHandle, token: str) -> admin.BeneficiaryResolutions:
    request = admin.GetBeneficiaryResolutionsRequest(person_token=token)
    return _call(server, "GetBeneficiaryResolutions", request)


def _details(error: grpc.RpcError) -> tuple[str, dict[str, str], list[str]]:
    """The reason, the metadata and the violated fields of a refusal."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reason, metadata, fields = "", {}, []
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            fields = [violation.field for violation in bad.field_violations]
    return reason, metadata, fields


def _refused(database_url: str, call: Callable[[], object]) -> grpc.RpcError:
    """``call``'s refusal, once checked that it wrote nothing."""
    before = row_counts(database_url)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert row_counts(database_url) == before, "a refused call wrote something"
    return caught.value


def test_a_grant_lets_a_person_at_the_bound_resolve_that_many_more(
    server: ServerHandle, database_url: str
) -> None:
    base = limits.beneficiary_people_resolved_max
    me = _me(server)
    _resolve(server, me, range(100, 100 + base))
    error = _refused(database_url, lambda: _resolve(server, me, [200]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _details(error)[:2] == (
        "BENEFICIARY_PEOPLE_LIMIT",
        {"limit": str(base), "resolved": str(base), "requested_new": "1"},
    )
    assert "GrantBeneficiaryResolutions" in (error.details() or "")
    # Support reads the count, the operator grants 3.
    before = _read(server, me)
    assert (before.resolved, before.allowed, before.granted, list(before.grants)) == (
        base,
        base,
        0,
        [],
    )
    granted = _grant(server, me, 3)
    assert (granted.person_token, granted.resolved, granted.base_allowed) == (me, base, base)
    assert (granted.granted, granted.allowed, granted.erased) == (3, base + 3, False)
    [grant] = granted.grants
    assert (grant.additional, grant.reason, grant.granted_by) == (3, REASON, OPERATOR)
    assert grant.granted_at.seconds > 0
    assert _read(server, me) == granted
    # Three more people, in two calls; the fourth is refused at the new bound.
    _resolve(server, me, [200, 201])
    _resolve(server, me, [202, 100])  # a person already resolved does not count again
    error = _refused(database_url, lambda: _resolve(server, me, [203]))
    assert _details(error)[:2] == (
        "BENEFICIARY_PEOPLE_LIMIT",
        {"limit": str(base + 3), "resolved": str(base + 3), "requested_new": "1"},
    )
    # A second grant adds to the first; both are listed, oldest first.
    second = _grant(server, me, 1, "ticket 4502: a child born this year")
    assert [g.additional for g in second.grants] == [3, 1]
    assert (second.resolved, second.allowed) == (base + 3, base + 4)
    _resolve(server, me, [203])
    # Another person's bound is their own.
    with server.channel("insurer", "gulf-health") as channel:
        [neighbour] = _tokens(channel, [2])
    assert _read(server, neighbour).allowed == base


def test_the_grants_together_are_bounded(server: ServerHandle, database_url: str) -> None:
    me = _me(server)
    grant_max = limits.beneficiary_resolutions_grant_max
    total_max = limits.beneficiary_resolutions_granted_max
    for _ in range(total_max // grant_max):
        _grant(server, me, grant_max)
    error = _refused(database_url, lambda: _grant(server, me, 1))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata, fields = _details(error)
    assert (reason, fields) == ("BENEFICIARY_GRANTS_LIMIT", ["additional"])
    assert metadata == {
        "granted_max": str(total_max),
        "granted": str(total_max),
        "additional": "1",
    }
    assert _read(server, me).allowed == limits.beneficiary_people_resolved_max + total_max


_BadGrant = tuple[Callable[[str], admin.GrantBeneficiaryResolutionsRequest], str, str, list[str]]
BAD_GRANTS: dict[str, _BadGrant] = {
    # case: (the request for the person's token, status code, reason, the fields named)
    "no token": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            additional=1, reason=REASON, request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["person_token"],
    ),
    "not a token": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token="SA:RESIDENCE_ID:2000000014",
            additional=1,
            reason=REASON,
            request_id=REQUEST_ID,
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["person_token"],
    ),
    "a token the vault never issued": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=UNKNOWN_TOKEN, additional=1, reason=REASON, request_id=REQUEST_ID
        ),
        "NOT_FOUND",
        "PERSON_TOKEN_UNKNOWN",
        ["person_token"],
    ),
    "additional 0": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, reason=REASON, request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["additional"],
    ),
    "additional over the limit": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me,
            additional=limits.beneficiary_resolutions_grant_max + 1,
            reason=REASON,
            request_id=REQUEST_ID,
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["additional"],
    ),
    "additional 2^32-1": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=2**32 - 1, reason=REASON, request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["additional"],
    ),
    "no reason": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=1, request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["reason"],
    ),
    "a blank reason": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=1, reason="   ", request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["reason"],
    ),
    "a reason with a control character": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=1, reason="two\nlines", request_id=REQUEST_ID
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["reason"],
    ),
    # Over-long: the request layer's bound (limits.request_field_max), before the servicer.
    "a reason over the limit": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me,
            additional=1,
            reason="x" * (limits.resolution_grant_reason_chars_max + 1),
            request_id=REQUEST_ID,
        ),
        "INVALID_ARGUMENT",
        "REQUEST_INVALID",
        ["reason"],
    ),
    "no request id": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=1, reason=REASON
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["request_id"],
    ),
    "a request id too short": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me,
            additional=1,
            reason=REASON,
            request_id="k" * (limits.resolution_grant_request_id_chars_min - 1),
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["request_id"],
    ),
    "a request id with a control character": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me, additional=1, reason=REASON, request_id="ticket-4411\t1"
        ),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["request_id"],
    ),
    # Over-long: the request layer's bound, as the reason's.
    "a request id over the limit": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(
            person_token=me,
            additional=1,
            reason=REASON,
            request_id="k" * (limits.resolution_grant_request_id_chars_max + 1),
        ),
        "INVALID_ARGUMENT",
        "REQUEST_INVALID",
        ["request_id"],
    ),
    "every field bad at once": (
        lambda me: admin.GrantBeneficiaryResolutionsRequest(person_token="pt_x"),
        "INVALID_ARGUMENT",
        "GRANT_REQUEST_INVALID",
        ["person_token", "additional", "reason", "request_id"],
    ),
}


@pytest.mark.parametrize("case", BAD_GRANTS)
def test_every_bad_grant_is_refused_with_its_reason_writing_nothing(
    server: ServerHandle, database_url: str, case: str
) -> None:
    me = _me(server)
    build, code, reason, fields = BAD_GRANTS[case]
    request = build(me)
    error = _refused(database_url, lambda: _call(server, "GrantBeneficiaryResolutions", request))
    assert error.code() == grpc.StatusCode[code], error.details()
    assert (_details(error)[0], _details(error)[2]) == (reason, fields)
    assert _read(server, me).allowed == limits.beneficiary_people_resolved_max


def test_a_retried_grant_is_answered_without_a_second_grant(
    server: ServerHandle, database_url: str
) -> None:
    """The operator's answer was lost and they retry with the same request id: the same answer,
    nothing written, and the person's allowance raised once."""
    base = limits.beneficiary_people_resolved_max
    me = _me(server)
    _resolve(server, me, range(100, 100 + base))
    first = _grant(server, me, 3, request_id=REQUEST_ID)
    [grant] = first.grants
    assert (grant.request_id, first.allowed) == (REQUEST_ID, base + 3)
    before = row_counts(database_url)
    assert _grant(server, me, 3, request_id=REQUEST_ID) == first
    assert row_counts(database_url) == before, "a repeated grant wrote something"
    # Counted once: three more people, not six.
    _resolve(server, me, [200, 201, 202])
    error = _refused(database_url, lambda: _resolve(server, me, [203]))
    assert _details(error)[:2] == (
        "BENEFICIARY_PEOPLE_LIMIT",
        {"limit": str(base + 3), "resolved": str(base + 3), "requested_new": "1"},
    )
    # A repeat later answers the resolutions as they are then, the grant among them.
    later = _grant(server, me, 3, request_id=REQUEST_ID)
    assert (later.resolved, later.allowed, [g.request_id for g in later.grants]) == (
        base + 3,
        base + 3,
        [REQUEST_ID],
    )


@pytest.mark.parametrize(
    ("additional", "reason", "another_person", "fields"),
    [
        (4, REASON, False, ["additional"]),
        (3, "ticket 4502: a child born this year", False, ["reason"]),
        (3, REASON, True, ["person_token"]),
    ],
)
def test_a_request_id_reused_for_another_grant_is_refused_writing_nothing(
    server: ServerHandle,
    database_url: str,
    additional: int,
    reason: str,
    another_person: bool,
    fields: list[str],
) -> None:
    me = _me(server)
    _grant(server, me, 3, request_id=REQUEST_ID)
    with server.channel("insurer", "gulf-health") as channel:
        [neighbour] = _tokens(channel, [2])
    person = neighbour if another_person else me
    error = _refused(
        database_url, lambda: _grant(server, person, additional, reason, request_id=REQUEST_ID)
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error.details()
    assert _details(error) == ("REQUEST_ID_REUSED", {"request_id": REQUEST_ID}, fields)
    assert (_read(server, me).granted, _read(server, neighbour).granted) == (3, 0)


CALLERS = 8
"""Operators' calls with one request id at once (a client retrying while its first call is
still under way, or two support staff sharing one ticket's id)."""


def test_calls_at_once_with_one_request_id_grant_once(server: ServerHandle) -> None:
    """Whichever call wins, the others are repeats: one row, every call answered with the
    grant. The calls start together at a barrier; the outcome asserted holds in any order."""
    me = _me(server)
    start = threading.Barrier(CALLERS)
    answers: list[admin.BeneficiaryResolutions] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with server.channel("operator", "operator") as channel:
                stub = admin_grpc.AdminServiceStub(channel)
                request = admin.GrantBeneficiaryResolutionsRequest(
                    person_token=me, additional=2, reason=REASON, request_id=REQUEST_ID
                )
                start.wait(timeout=60)  # a bound against a hang should one thread fail first
                answers.append(stub.GrantBeneficiaryResolutions(request, timeout=60).resolutions)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(answers) == CALLERS
    assert all([g.request_id for g in answer.grants] == [REQUEST_ID] for answer in answers)
    assert {answer.granted for answer in answers} == {2}
    with server.running.engine.connect() as connection:
        rows = connection.execute(select(beneficiary_resolution_grants)).all()
    assert [(row.beneficiary_token, row.request_id) for row in rows] == [(me, REQUEST_ID)]


def test_an_erased_person_is_read_without_the_reasons_but_granted_nothing(
    server: ServerHandle, database_url: str
) -> None:
    """Erased through the server (PersonErased, signed by the operator): the grants and the
    bound stay, their reasons are cleared in the table, on the wire and on the command line."""
    me = _me(server)
    granted = _grant(server, me, 2)
    assert [grant.reason for grant in granted.grants] == [REASON]
    with server.channel("operator", "operator") as channel:
        operator = OperatorClient(
            channel,
            signer=OPERATOR_SIGNER,
            log=TrustedLog.from_verifier_key(server.log_verifier_key),
        )
        erased_token, _ = operator.erase_person(person(SELF), basis="PDPL art. 18: test")
    assert erased_token == me
    read = _read(server, me)
    assert (read.erased, read.granted, read.allowed) == (True, 2, granted.allowed)
    [kept], [was] = read.grants, granted.grants
    assert kept.reason == ""  # cleared by the erasure
    kept.reason = was.reason
    assert kept == was  # the amount, who, when and the request id stay
    with server.running.engine.connect() as connection:
        rows = connection.execute(select(beneficiary_resolution_grants)).all()
    assert [(row.beneficiary_token, row.additional, row.reason) for row in rows] == [(me, 2, "")]
    shown = _cli(
        "admin", "beneficiary", "resolutions", "--person-token", me,
        *server.cli_arguments("operator", "operator"),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].split("\t")[-1] == "(erased)"
    assert REASON not in shown.stdout
    error = _refused(database_url, lambda: _grant(server, me, 1))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (_details(error)[0], _details(error)[2]) == ("PERSON_ERASED", ["person_token"])


def test_an_unknown_or_malformed_token_is_not_read(server: ServerHandle) -> None:
    for token, code, reason in (
        (UNKNOWN_TOKEN, grpc.StatusCode.NOT_FOUND, "PERSON_TOKEN_UNKNOWN"),
        ("pt_short", grpc.StatusCode.INVALID_ARGUMENT, "GRANT_REQUEST_INVALID"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "GRANT_REQUEST_INVALID"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _read(server, token)
        assert caught.value.code() == code
        assert _details(caught.value)[0] == reason


@pytest.mark.parametrize(
    ("role", "name"),
    [
        ("insurer", "gulf-health"),
        ("authority", "kw-gov-health"),
        ("auditor", "auditor"),
        ("portal", "KW"),
        ("regulator", "cchi"),
        ("funder", "zakat-chamber"),
        ("beneficiary", "self"),  # the person themselves: replaced by their token below
    ],
)
def test_only_the_operator_may_read_or_grant(
    server: ServerHandle, database_url: str, role: str, name: str
) -> None:
    me = _me(server)
    caller = (role, me if name == "self" else name)
    requests: list[tuple[str, _Request]] = [
        (
            "GrantBeneficiaryResolutions",
            admin.GrantBeneficiaryResolutionsRequest(
                person_token=me, additional=1, reason=REASON, request_id=REQUEST_ID
            ),
        ),
        ("GetBeneficiaryResolutions", admin.GetBeneficiaryResolutionsRequest(person_token=me)),
    ]
    for method, request in requests:
        error = _refused(
            database_url,
            lambda: _call(server, method, request, caller),  # noqa: B023 (called at once)
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _details(error)[0] == "ROLE_NOT_ALLOWED"
    assert _read(server, me).granted == 0


def test_a_grant_survives_a_restart(
    database_url: str, log_signer: Ed25519Signer, tmp_path: Path
) -> None:
    base = limits.beneficiary_people_resolved_max
    first = start_server_thread(database_url, log_signer, tmp_path)
    try:
        me = _me(first)
        _resolve(first, me, range(100, 100 + base))
        granted = _grant(first, me, 2)
    finally:
        first.stop()
    again = start_server_thread(database_url, log_signer, tmp_path)
    try:
        assert _read(again, me) == granted
        _resolve(again, me, [200, 201])
        error = _refused(database_url, lambda: _resolve(again, me, [202]))
        assert _details(error)[1]["limit"] == str(base + 2)
        with again.running.engine.connect() as connection:
            rows = connection.execute(select(beneficiary_resolution_grants)).all()
        assert [(row.beneficiary_token, row.grant_number, row.additional) for row in rows] == [
            (me, 0, 2)
        ]
    finally:
        again.stop()


CLI = [sys.executable, "-m", "policy_ledger.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=120)


def test_the_command_line_reads_and_grants(server: ServerHandle, database_url: str) -> None:
    me = _me(server)
    operator = server.cli_arguments("operator", "operator")
    shown = _cli(
        "admin", "beneficiary", "resolutions", "--person", person_text(person(SELF)), *operator
    )
    assert shown.returncode == 0, shown.stderr
    base = limits.beneficiary_people_resolved_max
    assert shown.stdout == f"{me}: resolved 0 of {base} ({base} base + 0 granted)\n"
    grant = [
        "admin", "beneficiary", "grant", "--person-token", me, "--additional", "5",
        "--reason", REASON, *operator,
    ]  # fmt: skip
    granted = _cli(*grant)
    assert granted.returncode == 0, granted.stderr
    printed_id, head, line = granted.stdout.splitlines()
    # No --request-id: a fresh one, printed first (before the call) to retry with.
    assert printed_id.startswith("request id ")
    request_id = printed_id.removeprefix("request id ")
    assert str(uuid.UUID(request_id)) == request_id
    assert head == f"{me}: resolved 0 of {base + 5} ({base} base + 5 granted)"
    number, amount, when, by, listed_id, why = line.split("\t")
    assert (number, amount, by, listed_id, why) == ("grant 1", "+5", OPERATOR, request_id, REASON)
    assert dt.datetime.fromisoformat(when).tzinfo is not None
    # The answer lost, the operator retries with the printed id: the same grant, nothing written.
    before = row_counts(database_url)
    retried = _cli(*grant, "--request-id", request_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == granted.stdout
    assert row_counts(database_url) == before
    # The id reused for another amount: exit 3, the reason on stderr, nothing written.
    reused = _cli(*grant[:6], "6", *grant[7:], "--request-id", request_id)
    assert reused.returncode == 3 and "REQUEST_ID_REUSED" in reused.stderr
    assert reused.stdout == f"request id {request_id}\n"
    assert row_counts(database_url) == before
    # Refused by the server: exit 3, the reason on stderr, nothing written.
    refused = _cli(
        "admin", "beneficiary", "grant", "--person-token", me, "--additional", "0",
        "--reason", REASON, *operator,
    )  # fmt: skip
    assert refused.returncode == 3 and "additional" in refused.stderr
    assert row_counts(database_url) == before
    # Not an operator: refused the same way.
    other = _cli(
        "admin", "beneficiary", "resolutions", "--person-token", me,
        *server.cli_arguments("auditor", "auditor"),
    )  # fmt: skip
    assert other.returncode == 3 and "PERMISSION_DENIED" in other.stderr
