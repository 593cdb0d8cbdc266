"""CoverageService.WatchCoverage end to end, on SQLite and PostgreSQL: the changes of a household
arrive in log order with the leaf indexes of the entries that caused them; a watch killed
mid-way and resumed from the last tree size it received gets exactly the changes it missed;
bad requests are refused with clear statuses and write nothing; a stopping server ends its
watches with UNAVAILABLE and the tree size to resume from (task C, issue 10 item 9)."""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2, types_pb2
from tests import clock as test_clock
from tests.builders import (
    cancelled,
    issued,
    permit_issued,
    permit_renewed,
    person,
    removed,
    sar,
    suspended,
)
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.stack import row_counts

GULF = "gulf-health"
SPONSOR, WIFE = person(501), person(502)
KIND = pb.CoverageChangeKind
WAIT_SECONDS = 60.0
"""A hang guard on waiting for a message, never a timing assumption."""


@dataclass
class World:
    server: ServerHandle
    insurer: InsurerClient
    operator: InsurerClient
    today: dt.date
    channels: list[grpc.Channel] = field(default_factory=list)

    def portal(self, role: str = "portal", name: str = "SA") -> PortalClient:
        channel = self.server.channel(role, name)
        self.channels.append(channel)
        return PortalClient(channel, log=TrustedLog.from_verifier_key(self.server.log_verifier_key))

    def tree_size(self) -> int:
        return int(self.server.running.sequencer.tree_size)


@pytest.fixture
def world(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> Iterator[World]:
    onboard(server, operator_signer, GULF, insurer_signer)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("insurer", GULF) as insurer_channel,
        server.channel("operator", "operator") as operator_channel,
    ):
        world = World(
            server,
            InsurerClient(insurer_channel, signer=insurer_signer, log=log),
            InsurerClient(operator_channel, signer=operator_signer, log=log),
            test_clock.now().date(),
        )
        try:
            yield world
        finally:
            for channel in world.channels:
                channel.close()


class Watch:
    """A watch read on a thread of its own: the test waits on its queue, never on time."""

    def __init__(self, client: PortalClient, **request: object) -> None:
        self.messages: queue.Queue[pb.WatchCoverageResponse | ClientError | None] = queue.Queue()
        self._stream = client.watch(jurisdiction="SA", **request)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._stream:
                self.messages.put(message)
        except ClientError as error:
            if error.code is not grpc.StatusCode.CANCELLED:  # CANCELLED: stop() left it
                self.messages.put(error)
        self.messages.put(None)

    def next(self) -> pb.WatchCoverageResponse:
        message = self.messages.get(timeout=WAIT_SECONDS)
        assert isinstance(message, pb.WatchCoverageResponse), message
        return message

    def until_caught_up(self, tree_size: int) -> list[pb.WatchCoverageResponse]:
        """The entry messages up to the heartbeat of ``tree_size`` (the heartbeats left out)."""
        entries = []
        while True:
            message = self.next()
            if message.WhichOneof("kind") == "entry":
                entries.append(message)
            elif message.tree_size >= tree_size:
                return entries

    def stop(self) -> None:
        """Leave the watch (the stream is cancelled) and wait until the reader has ended."""
        self._stream.cancel()
        self._thread.join(timeout=WAIT_SECONDS)


def _changes(messages: list[pb.WatchCoverageResponse]) -> list[tuple[int, str, str]]:
    return [
        (
            message.entry.leaf_index,
            KIND.Name(change.kind).removeprefix("COVERAGE_CHANGE_KIND_"),
            change.policy_id,
        )
        for message in messages
        for change in message.entry.changes
    ]


def _household_story(world: World) -> list[int]:
    """Five entries that change the sponsor's household; their leaf indexes."""
    today, year = world.today, world.today + dt.timedelta(days=364)
    overdue_since = today - dt.timedelta(days=limits.premium_grace_days + 10)
    leaves = [
        world.insurer.submit(
            issued(GULF, "P-1", SPONSOR, [(SPONSOR, 1), (WIFE, 2)], today, year)
        ).leaf_index,
        # An earlier policy, ended yesterday, whose one instalment fell due before the grace
        # period: overdue from its own entry.
        world.insurer.submit(
            issued(
                GULF,
                "P-2",
                SPONSOR,
                [(SPONSOR, 1)],
                overdue_since,
                today - dt.timedelta(days=1),
                instalments=[(overdue_since, sar(100_000))],
            )
        ).leaf_index,
        # From today neither is covered (the household is on hold) ...
        world.insurer.submit(
            cancelled(GULF, "P-1", today, events_pb2.CANCELLATION_REASON_FINAL_EXIT)
        ).leaf_index,
        # ... until a new policy covers both.
        world.insurer.submit(
            issued(GULF, "P-3", SPONSOR, [(SPONSOR, 1), (WIFE, 2)], today, year)
        ).leaf_index,
        world.operator.submit(suspended(GULF, today)).leaf_index,
    ]
    return leaves


def test_changes_arrive_in_log_order_with_their_leaf_indexes(world: World) -> None:
    start = world.tree_size()
    watch = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        first = watch.next()
        assert first.WhichOneof("kind") == "heartbeat" and first.tree_size == start
        issued_1, issued_2, cancel, replacement, suspend = _household_story(world)
        received = watch.until_caught_up(world.tree_size())
    finally:
        watch.stop()
    assert _changes(received) == [
        (issued_2, "PREMIUM_OVERDUE", "P-2"),
        (cancel, "POLICY_CANCELLED", "P-1"),
        (replacement, "HOLD_LIFTED", "P-3"),
        (suspend, "INSURER_SUSPENDED", "P-3"),  # P-1 and P-2 ended before the suspension
    ]
    assert issued_1 < issued_2
    for message in received:
        assert message.tree_size == message.entry.leaf_index + 1
        assert message.entry.checkpoint_tree_size > message.entry.leaf_index
    cancelled_change = received[1].entry.changes[0]
    assert {p.value for p in cancelled_change.people} == {SPONSOR.value, WIFE.value}
    assert cancelled_change.effective_date.day == world.today.day
    assert "FINAL_EXIT" in cancelled_change.detail
    lifted = received[2].entry.changes[0]
    assert {p.value for p in lifted.people} == {SPONSOR.value, WIFE.value}


def test_a_watch_killed_mid_way_resumes_with_exactly_the_changes_it_missed(world: World) -> None:
    start = world.tree_size()
    _household_story(world)
    end = world.tree_size()
    whole = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        everything = whole.until_caught_up(end)
    finally:
        whole.stop()
    assert len(everything) == 4

    # Killed after its second change: resumed from the last tree size it received.
    killed = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        seen = [killed.next() for _ in range(2)]
    finally:
        killed.stop()
    assert [m.WhichOneof("kind") for m in seen] == ["entry", "entry"]
    resumed = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=seen[-1].tree_size)
    try:
        rest = resumed.until_caught_up(end)
    finally:
        resumed.stop()
    assert [*seen, *rest] == everything

    # Killed when caught up: nothing new, nothing repeated.
    again = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=end)
    try:
        assert again.until_caught_up(end) == []
    finally:
        again.stop()


def _refused(channel: grpc.Channel, request: pb.WatchCoverageRequest) -> grpc.RpcError:
    stub = pb_grpc.CoverageServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        for _ in stub.WatchCoverage(request, timeout=WAIT_SECONDS):
            pass
    return raised.value


def test_bad_watches_are_refused_with_clear_statuses_and_write_nothing(
    world: World, database_url: str
) -> None:
    purpose = types_pb2.ACCESS_PURPOSE_RESIDENCE_RENEWAL
    size = world.tree_size()
    good = pb.WatchCoverageRequest(household_sponsor=SPONSOR, jurisdiction="SA", purpose=purpose)
    beyond = pb.WatchCoverageRequest(
        household_sponsor=SPONSOR, from_tree_size=size + 1, jurisdiction="SA", purpose=purpose
    )
    unknown_type = pb.WatchCoverageRequest(
        person=types_pb2.PersonId(type=99, value="2000000008", country_code="SA"),  # type: ignore[arg-type]
        jurisdiction="SA",
        purpose=purpose,
    )
    no_subject = pb.WatchCoverageRequest(jurisdiction="SA", purpose=purpose)
    no_purpose = pb.WatchCoverageRequest(household_sponsor=SPONSOR, jurisdiction="SA")
    slow_heartbeat = pb.WatchCoverageRequest(
        household_sponsor=SPONSOR,
        heartbeat_seconds=limits.watch_heartbeat_seconds_max + 1,
        jurisdiction="SA",
        purpose=purpose,
    )
    abroad = pb.WatchCoverageRequest(
        establishment=types_pb2.Organization(country_code="KW", registration_number="7001"),
        jurisdiction="SA",
        purpose=purpose,
    )
    before = row_counts(database_url)
    with world.server.channel("portal", "SA") as channel:
        error = _refused(channel, beyond)
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert f"{size + 1} > {size}" in (error.details() or "")
        for request in (unknown_type, no_subject, no_purpose, slow_heartbeat, abroad):
            assert _refused(channel, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    with world.server.channel("portal", "KW") as channel:
        assert _refused(channel, good).code() == grpc.StatusCode.PERMISSION_DENIED
    with world.server.channel("insurer", GULF) as channel:
        assert _refused(channel, good).code() == grpc.StatusCode.PERMISSION_DENIED
    assert row_counts(database_url) == before

    # The accepted twins: the same requests from the portal of SA start, caught up; each
    # watch is recorded once in the access records, and writes nothing else.
    for subject in (
        {"household_sponsor": SPONSOR},
        {"establishment": types_pb2.Organization(country_code="SA", registration_number="7001")},
    ):
        watch = Watch(world.portal(), **subject)
        try:
            assert watch.next().WhichOneof("kind") == "heartbeat"
        finally:
            watch.stop()
    after = row_counts(database_url)
    assert after["access_records"] == before["access_records"] + 2
    assert {**after, "access_records": 0} == {**before, "access_records": 0}


def test_a_quiet_watch_sends_heartbeats(world: World) -> None:
    """Nothing is committed: heartbeats keep coming, each at the same tree size (the test waits
    for the messages themselves)."""
    watch = Watch(world.portal(), household_sponsor=SPONSOR, heartbeat_seconds=1)
    try:
        beats = [watch.next() for _ in range(3)]
    finally:
        watch.stop()
    assert [beat.WhichOneof("kind") for beat in beats] == ["heartbeat"] * 3
    assert len({beat.tree_size for beat in beats}) == 1


def test_a_caller_over_its_watches_is_refused_until_one_ends(world: World) -> None:
    client = world.portal()
    watches = [
        Watch(client, household_sponsor=SPONSOR) for _ in range(limits.watches_per_caller_max)
    ]
    try:
        for watch in watches:
            assert watch.next().WhichOneof("kind") == "heartbeat"
        over = Watch(client, household_sponsor=SPONSOR)
        refused = over.messages.get(timeout=WAIT_SECONDS)
        assert isinstance(refused, ClientError), refused
        assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.reason == "WATCHES_TOO_MANY"
        # Another caller has its own share.
        other = Watch(world.portal("operator", "operator"), household_sponsor=SPONSOR)
        assert other.next().WhichOneof("kind") == "heartbeat"
        other.stop()
        watches.pop().stop()
        hub = world.server.running.watches
        assert hub is not None
        # The ended watch's slot is free once the server saw it end: a new one is accepted
        # (retried on the refusal itself, never after a sleep).
        while True:
            again = Watch(client, household_sponsor=SPONSOR)
            first = again.messages.get(timeout=WAIT_SECONDS)
            if isinstance(first, pb.WatchCoverageResponse):
                watches.append(again)
                break
            assert isinstance(first, ClientError) and first.reason == "WATCHES_TOO_MANY"
    finally:
        for watch in watches:
            watch.stop()


def test_a_stopping_server_ends_its_watches_with_the_tree_size_to_resume_from(
    database_url: str, log_signer: Ed25519Signer, tmp_path: object
) -> None:
    server = start_server_thread(database_url, log_signer, tmp_path)  # type: ignore[arg-type]
    stopped = False
    try:
        with server.channel("operator", "operator") as channel:
            client = PortalClient(
                channel, log=TrustedLog.from_verifier_key(server.log_verifier_key)
            )
            watch = Watch(client, household_sponsor=SPONSOR)
            heartbeat = watch.next()
            server.stop()
            stopped = True
            ended = watch.messages.get(timeout=WAIT_SECONDS)
            while isinstance(ended, pb.WatchCoverageResponse):  # the last heartbeat
                assert ended.tree_size == heartbeat.tree_size
                ended = watch.messages.get(timeout=WAIT_SECONDS)
            assert isinstance(ended, ClientError), ended
            assert ended.code is grpc.StatusCode.UNAVAILABLE
            assert ended.reason == "SHUTTING_DOWN"
            assert ended.metadata.get("tree_size") == str(heartbeat.tree_size)
    finally:
        if not stopped:
            server.stop()


# ENDS_BEFORE_PERMIT: residence permits (issue 10 item 9; docs/coverage.md "Watching coverage").

AUTHORITY = "sa-residence"


@pytest.fixture
def authority(world: World, operator_signer: Ed25519Signer) -> InsurerClient:
    """The residence authority, onboarded on the world's server."""
    signer = Ed25519Signer.generate(AUTHORITY)
    onboard(world.server, operator_signer, AUTHORITY, signer, SignerRole.AUTHORITY)
    channel = world.server.channel("authority", AUTHORITY)
    world.channels.append(channel)
    log = TrustedLog.from_verifier_key(world.server.log_verifier_key)
    return InsurerClient(channel, signer=signer, log=log)


def _permit_story(world: World, authority: InsurerClient) -> list[int]:
    """A household whose coverage and permit end close together; the leaf indexes of: a
    policy (no permit yet), the permit (30 days after the coverage), a renewal (120 days
    after: outside the window), a follow-on policy (60 days before), the wife's removal from
    it (90 days before: the window's edge)."""
    today, year = world.today, world.today + dt.timedelta(days=364)
    both = [(SPONSOR, 1), (WIFE, 2)]
    wife = (WIFE, events_pb2.RELATIONSHIP_SPOUSE, today)
    return [
        world.insurer.submit(issued(GULF, "P-1", SPONSOR, both, today, year)).leaf_index,
        authority.submit(
            permit_issued(
                AUTHORITY,
                "R-1",
                SPONSOR,
                SPONSOR,
                [wife],
                today,
                today,
                year + dt.timedelta(days=30),
            )
        ).leaf_index,
        authority.submit(
            permit_renewed(AUTHORITY, "R-1", year + dt.timedelta(days=120))
        ).leaf_index,
        world.insurer.submit(
            issued(
                GULF,
                "P-2",
                SPONSOR,
                both,
                year + dt.timedelta(days=1),
                year + dt.timedelta(days=60),
            )
        ).leaf_index,
        world.insurer.submit(
            removed(
                GULF,
                "P-2",
                WIFE,
                year + dt.timedelta(days=31),
                events_pb2.CANCELLATION_REASON_FINAL_EXIT,
            )
        ).leaf_index,
    ]


def _permit_changes(messages: list[pb.WatchCoverageResponse]) -> list[tuple[int, str, str, str]]:
    """(leaf index, policy, person, D days) of each ENDS_BEFORE_PERMIT, by leaf and person."""
    return sorted(
        (
            message.entry.leaf_index,
            change.policy_id,
            next(iter(change.people)).value,
            change.detail.split(" days before")[0].rsplit(" ", 1)[1],
        )
        for message in messages
        for change in message.entry.changes
        if change.kind == KIND.COVERAGE_CHANGE_KIND_ENDS_BEFORE_PERMIT
    )


def test_coverage_ending_before_the_permit_arrives_with_its_leaf_index(
    world: World, authority: InsurerClient
) -> None:
    start = world.tree_size()
    household = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        policy, permit, renewal, follow_on, removal = _permit_story(world, authority)
        received = household.until_caught_up(world.tree_size())
    finally:
        household.stop()
    assert policy < permit < renewal < follow_on < removal
    assert _permit_changes(received) == sorted(
        [
            (permit, "P-1", SPONSOR.value, "30"),
            (permit, "P-1", WIFE.value, "30"),
            (follow_on, "P-2", SPONSOR.value, "60"),
            (follow_on, "P-2", WIFE.value, "60"),
            (removal, "P-2", WIFE.value, "90"),
        ]
    )
    first = next(
        change
        for message in received
        for change in message.entry.changes
        if change.kind == KIND.COVERAGE_CHANGE_KIND_ENDS_BEFORE_PERMIT
    )
    year = world.today + dt.timedelta(days=364)
    first_uncovered = year + dt.timedelta(days=1)
    assert (first.effective_date.year, first.effective_date.month, first.effective_date.day) == (
        first_uncovered.year,
        first_uncovered.month,
        first_uncovered.day,
    )
    # A person's watch sees only that person's.
    wife = Watch(world.portal(), person=WIFE, from_tree_size=start)
    try:
        mine = wife.until_caught_up(world.tree_size())
    finally:
        wife.stop()
    assert [(leaf, who) for leaf, _, who, _ in _permit_changes(mine)] == [
        (permit, WIFE.value),
        (follow_on, WIFE.value),
        (removal, WIFE.value),
    ]


def test_a_permit_watch_resumed_from_any_tree_size_gets_exactly_the_rest(
    world: World, authority: InsurerClient
) -> None:
    start = world.tree_size()
    _permit_story(world, authority)
    end = world.tree_size()
    whole = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        everything = whole.until_caught_up(end)
    finally:
        whole.stop()
    assert len(_permit_changes(everything)) == 5
    # Killed after its first message, resumed from the tree size it received.
    killed = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=start)
    try:
        seen = killed.next()
    finally:
        killed.stop()
    assert seen.WhichOneof("kind") == "entry"
    resumed = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=seen.tree_size)
    try:
        assert [seen, *resumed.until_caught_up(end)] == everything
    finally:
        resumed.stop()
    # From every tree size of the story: exactly the changes of the entries from there.
    for size in range(start, end + 1):
        watch = Watch(world.portal(), household_sponsor=SPONSOR, from_tree_size=size)
        try:
            rest = watch.until_caught_up(end)
        finally:
            watch.stop()
        assert rest == [m for m in everything if m.entry.leaf_index >= size], size


WORKER = person(503)
ESTABLISHMENT = types_pb2.Organization(country_code="SA", registration_number="7000000001")


def test_an_establishment_follows_the_workers_its_permits_name_and_resumes_exactly(
    world: World, authority: InsurerClient
) -> None:
    today, year = world.today, world.today + dt.timedelta(days=364)
    start = world.tree_size()
    own = world.insurer.submit(issued(GULF, "P-W", WORKER, [(WORKER, 1)], today, year))
    stranger = world.insurer.submit(issued(GULF, "P-S", WIFE, [(WIFE, 1)], today, year))
    permit = authority.submit(
        permit_issued(
            AUTHORITY,
            "R-W",
            WORKER,
            ESTABLISHMENT.registration_number,
            [],
            today,
            today,
            year + dt.timedelta(days=30),
        )
    )
    cancel = world.insurer.submit(
        cancelled(
            GULF, "P-W", year - dt.timedelta(days=9), events_pb2.CANCELLATION_REASON_FINAL_EXIT
        )
    )
    world.insurer.submit(
        cancelled(
            GULF, "P-S", year - dt.timedelta(days=9), events_pb2.CANCELLATION_REASON_FINAL_EXIT
        )
    )
    end = world.tree_size()
    whole = Watch(world.portal(), establishment=ESTABLISHMENT, from_tree_size=start)
    try:
        everything = whole.until_caught_up(end)
    finally:
        whole.stop()
    assert own.leaf_index < stranger.leaf_index < permit.leaf_index
    assert sorted(_changes(everything)) == [
        (permit.leaf_index, "ENDS_BEFORE_PERMIT", "P-W"),
        (cancel.leaf_index, "ENDS_BEFORE_PERMIT", "P-W"),
        (cancel.leaf_index, "POLICY_CANCELLED", "P-W"),
    ]
    for message in everything:
        assert {p.value for c in message.entry.changes for p in c.people} == {WORKER.value}
    for size in range(start, end + 1):
        watch = Watch(world.portal(), establishment=ESTABLISHMENT, from_tree_size=size)
        try:
            rest = watch.until_caught_up(end)
        finally:
            watch.stop()
        assert rest == [m for m in everything if m.entry.leaf_index >= size], size
