"""Every limit the ledger enforces, in one place (TigerBeetle style: put a limit on everything).

Limits are checked at the boundary, before any work is done: an over-limit request is refused
with RESOURCE_EXHAUSTED (sizes, counts) or INVALID_ARGUMENT (string lengths, formats) and nothing
is written. Names are ``<thing>_<unit>_max``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# gRPC transport.
grpc_message_bytes_max: Final = 4 * 1024 * 1024
"""Largest gRPC message the server accepts or sends."""

# DSSE envelopes and event payloads.
envelope_payload_bytes_max: Final = 64 * 1024
"""Largest serialized event payload inside a DSSE envelope."""
envelope_payload_type_chars_max: Final = 128
envelope_signatures_max: Final = 4
"""A DSSE envelope may carry a few signatures (key rotation); we need one we trust."""
envelope_keyid_chars_max: Final = 128
ed25519_signature_bytes: Final = 64
ed25519_public_key_bytes: Final = 32

# Event fields.
event_id_chars_max: Final = 128
insurer_id_chars_max: Final = 64
policy_id_chars_max: Final = 128
plan_chars_max: Final = 64
person_id_value_chars_max: Final = 32
name_chars_max: Final = 256
reference_chars_max: Final = 128
policy_members_max: Final = 64
"""A household policy covers the sponsor and his dependents and domestic workers."""
policy_instalments_max: Final = 24
"""Instalments one policy's premium schedule may state (monthly over the longest term)."""
policy_term_days_max: Final = 2 * 366
"""Longest coverage period one policy may state (residence permits run one or two years)."""
money_amount_minor_max: Final = 10**12
"""Largest amount in minor units (a billion KWD): well inside int64, far beyond any premium."""
event_time_skew_seconds_max: Final = 24 * 3600
"""How far in the future an event's ``occurred_at`` may be relative to the server's clock."""

# Streaming and batching.
submit_stream_in_flight_max: Final = 1024
"""Envelopes one SubmitEvents stream may have awaiting a receipt; more wait for receipts."""
submit_message_envelopes_max: Final = 64
"""Envelopes one SubmitEvents request message may carry (``envelopes``); more is refused
INVALID_ARGUMENT and ends the stream. The message as a whole stays under
``grpc_message_bytes_max`` (64 envelopes of a few hundred bytes each are typical)."""
submit_message_envelopes_default: Final = 8
"""Envelopes ``InsurerClient.submit_stream`` puts in one request message unless told: 8 cut
the server's CPU per event by about a fifth at the same or a better rate; 64 cut it a little
more but lowered the rate (one process: long runs of admission starve the sequencer's
commits; docs/benchmarks.md). With the sequencer in its own process (``serve --workers``) a
worker's CPU per event is level from 8 to 32 (gRPC's per-message cost is already small beside
the signature check) and higher at 64, so 8 stays."""
sequencer_batch_entries_max: Final = 2048
sequencer_queue_entries_max: Final = 65536
"""Submissions waiting for the sequencer; beyond this the server answers UNAVAILABLE."""
caller_queue_entries_max: Final = 8192
"""Submissions of one caller waiting for the sequencer; beyond, RESOURCE_EXHAUSTED with a retry
hint. Batches take the waiting callers' submissions round-robin (``ledger.fair``)."""
unavailable_retry_delay_ms: Final = 200
"""The retry hint (google.rpc RetryInfo) of an UNAVAILABLE answer: a storage fault or a full
queue usually clears within this (the fault-injection runs recovered within 0.2 s)."""

# SQLite's write-ahead log (ledger/storage/wal.py, docs/operations.md "SQLite's WAL").
wal_checkpoint_pages: Final = 1000
"""WAL pages not yet copied into the database file past which the server's checkpointer runs a
PASSIVE checkpoint (SQLite's own automatic threshold, which the server turns off: the copy and
its fsync no longer fall inside whichever commit crossed it)."""
wal_restart_pages: Final = 10_000
"""Pages the WAL holds (about 40 MB at 4 KB a page) when the next write copies the few pages the
checkpointer's last PASSIVE checkpoint left, so that SQLite starts the WAL again from its
beginning (it does only when a write begins with every page copied). That copy and its fsync
are on the commit path: once every this many pages, not every ``wal_checkpoint_pages``."""
wal_pages_max: Final = 40_000
"""Pages the WAL may hold (about 160 MB at 4 KB a page) before the checkpointer escalates to a
TRUNCATE checkpoint: readers holding old snapshots can keep the WAL from starting again, and it
then grows with every commit."""
wal_truncate_wait_ms_max: Final = 250
"""How long an escalated (TRUNCATE) checkpoint waits for readers and the writer: it holds the
write lock meanwhile, so this bounds the stall it can add to one commit."""
wal_truncate_retry_seconds: Final = 10.0
"""After a TRUNCATE checkpoint a reader kept from finishing, the next is tried no sooner than
this (each try may stall the writer ``wal_truncate_wait_ms_max``)."""
wal_check_interval_seconds: Final = 1.0
"""The checkpointer looks at the WAL at least this often, besides after each of the sequencer's
commits: other processes (``serve --workers N``'s workers) write to it too."""

integrity_check_interval_seconds: Final = 60.0
"""After a database error that says corruption, the server checks whether the file is corrupt
(``ledger.storage.integrity``) at most once per this interval: a burst of failing calls runs one
round of checks, not one each, and a fault that cleared may be checked again after it."""
integrity_check_confirmations: Final = 3
"""A round confirms a corruption only if this many checks in a row, each on a connection opened
for it, find the same thing: a read fault makes a sound page look damaged, but a different page
or not at all the next time; a damaged page is found again. A check that passes, fails or finds
something else ends the round unconfirmed, so an intact file is still read once a round and only
a file each check finds damaged is read this many times."""
integrity_io_fault_quiet_seconds: Final = 60.0
"""A round confirms a corruption only if the engine saw no I/O fault (IOERR, a full disk, a
failed open: ``ledger.storage.faults.is_io_fault``) for this long before it began, nor while it
ran: the disk failing reads is an I/O problem (STORAGE_UNAVAILABLE, retry), not proof of a
damaged file."""
integrity_check_findings_max: Final = 1
"""``PRAGMA quick_check(N)``'s N: the check stops at its first finding (one is proof enough; an
intact file is still read whole, once per ``integrity_check_interval_seconds`` at most)."""
integrity_check_busy_ms: Final = 5_000
"""How long the check's own connection waits for a lock (a read in WAL mode rarely waits)."""

# The worker -> sequencer hand-off of ``serve --workers N`` (ledger/handoff, docs/design.md).
handoff_frame_bytes_max: Final = 2 * grpc_message_bytes_max
"""Largest frame either end of the hand-off accepts: an admitted envelope (at most
``grpc_message_bytes_max`` as received) or a receipt (entry, checkpoint note, proof) with room to
spare. A longer length prefix closes that connection: the peer is broken, not busy."""
handoff_in_flight_max: Final = sequencer_queue_entries_max
"""Hand-offs one worker may have awaiting an outcome; beyond, UNAVAILABLE (OVERLOADED) at once,
as the sequencer's own full queue answers."""
handoff_reconnect_delay_ms_max: Final = 1000
"""A worker that lost the sequencer retries connecting after 10 ms, doubling up to this."""

# Reads.
entries_page_max: Final = 1000
"""Entries one GetEntries call streams at most."""
tree_levels_max: Final = 63
"""Node levels a tree of at most 2**63 leaves can have."""
proof_cache_levels: Final = 14
"""Top levels of the tree each process keeps in memory for proofs (ledger.storage.node_cache):
a proof then reads from the database only the nodes below them, about as many at 10M entries as
at 16,384 (docs/benchmarks.md, "Proofs at 10M entries")."""
proof_cache_entries_max: Final = 2 ** (proof_cache_levels + 2)
"""Node hashes that cache holds at most (about 10 MB): the top ``proof_cache_levels`` levels of
any tree have fewer than half this many nodes, so it trims only after the tree has grown past
them or right edges of many sizes have piled up."""

# Keys and notes.
key_name_chars_max: Final = 128
note_bytes_max: Final = 16 * 1024
note_signatures_max: Final = 32
origin_chars_max: Final = 256

# Coverage queries.
household_members_max: Final = 64
erasure_basis_chars_max: Final = 500
"""Characters of a PersonErased event's legal basis."""
person_tokens_per_call_max: Final = 256
"""Identifiers one IdentityService.GetPersonTokens call may tokenize (a few households' worth;
a bulk load asks in several calls)."""
"""Members one household check may name (as many as one policy may cover)."""
household_days_max: Final = 3 * 366
"""Longest as_of..through span a household check covers (permits run one to three years)."""
history_page_max: Final = 1000
"""Entries one ListPolicyHistory / FindEntries page returns at most."""
history_page_default: Final = 100

# Human texts (ledger/i18n, docs/i18n.md).
accept_language_chars_max: Final = 256
"""Longest ``accept-language`` request metadata value read (longer is INVALID_ARGUMENT)."""
accept_language_ranges_max: Final = 16
"""Language ranges one ``accept-language`` value may list."""

# Witnessing (ledger/witnessing.py, docs/witness.md).
witnesses_max: Final = 16
"""Witnesses the log submits to (each cosignature is a line of the served note)."""
witness_response_bytes_max: Final = 64 * 1024
"""Largest add-checkpoint answer read from a witness."""
witness_timeout_seconds: Final = 10.0
"""How long one add-checkpoint request may take before the witness counts as failing."""
witness_retry_seconds: Final = 30.0
"""A failing witness is retried at the next checkpoint, or after this long."""
# Every request, checked by one descriptor-driven layer (ledger/rpc/validation.py) before any
# servicer sees it. The defaults bound every field of every message; the table below tightens
# (or, for URLs, widens) the bound of named fields. Keys are protobuf full field names.
request_string_chars_max: Final = 1024
"""Longest string any request field may hold unless ``request_field_max`` says otherwise."""
request_bytes_max: Final = envelope_payload_bytes_max
"""Largest bytes field of any request unless ``request_field_max`` says otherwise."""
request_repeated_max: Final = 1024
"""Most elements any repeated request field may hold unless ``request_field_max`` says otherwise."""
request_violations_max: Final = 32
"""Field violations one refusal lists at most (the rest are counted, not listed)."""
url_chars_max: Final = 2048
penalty_decision_id_chars_max: Final = 128
"""The longest decision number of a penalty decision."""
# Task E (cards): bounds of the card and document requests (below).
card_number_digits: Final = 16
"""Digits of an insurance card number, its Luhn check digit included (docs/cards.md)."""
document_bytes_max: Final = 16384
"""The largest signed document ``GetDocumentStatus`` reads (a C2SP signed note is at most
16 KiB: docs/formats.md)."""
# An operator's grant of more people to resolve (the rest below, with the beneficiaries' bounds).
resolution_grant_reason_chars_max: Final = 256
"""The longest reason an operator gives for a grant (kept forever: docs/privacy.md)."""
resolution_grant_request_id_chars_min: Final = 8
"""The shortest request id (idempotency key) of a grant: as payments' idempotency keys
(``payments.limits.IDEMPOTENCY_KEY_CHARS``, 8 to 128 printable characters), long enough that
two operators' ids do not collide by chance; the CLI's default is a fresh UUID (36)."""
resolution_grant_request_id_chars_max: Final = 128
"""The longest request id of a grant (kept with it forever, migration 0020)."""
request_field_max: Final[Mapping[str, int]] = MappingProxyType(
    {
        "ledger.v1.Envelope.payload": envelope_payload_bytes_max,
        "ledger.v1.Envelope.payload_type": envelope_payload_type_chars_max,
        "ledger.v1.Signature.keyid": envelope_keyid_chars_max,
        "ledger.v1.PersonId.value": person_id_value_chars_max,
        "ledger.v1.CheckHouseholdRequest.members": household_members_max,
        "ledger.v1.GetPersonTokensRequest.people": person_tokens_per_call_max,
        "ledger.v1.ListPolicyHistoryRequest.insurer_id": insurer_id_chars_max,
        "ledger.v1.ListPolicyHistoryRequest.policy_id": policy_id_chars_max,
        "ledger.v1.FindEntriesRequest.policy_id": policy_id_chars_max,
        "ledger.v1.ListInsurerKeysRequest.insurer_id": insurer_id_chars_max,
        "ledger.v1.SubmitEventsRequest.envelopes": submit_message_envelopes_max,
        "payments.v1.QuoteRenewalRequest.members": household_members_max,
        "payments.v1.StartPaymentRequest.return_url": url_chars_max,
        "payments.v1.RefundPaymentRequest.reason": name_chars_max,
        # Task A (issue 10).
        "ledger.v1.CheckEmployerRequest.establishment_number": reference_chars_max,
        "ledger.v1.CheckEmployerRequest.page_token": reference_chars_max,
        "ledger.v1.ComputeArrearsRequest.establishment_number": reference_chars_max,
        "ledger.v1.ComputeArrearsRequest.activity": plan_chars_max,
        "ledger.v1.ComputeArrearsRequest.region": plan_chars_max,
        "ledger.v1.ComputeArrearsRequest.category": plan_chars_max,
        # Penalty decisions (task B).
        "ledger.v1.GetPenaltyDecisionRequest.decision_id": penalty_decision_id_chars_max,
        "ledger.v1.ListPenaltyDecisionsRequest.establishment_number": reference_chars_max,
        # Task E (cards).
        "ledger.v1.GetCardStatusRequest.card_number": card_number_digits,
        "ledger.v1.GetCardRequest.card_number": card_number_digits,
        "ledger.v1.GetDocumentStatusRequest.document": document_bytes_max,
        # Task F (issue 11, items 4-5).
        "ledger.v1.GetPersonRecordRequest.person_token": insurer_id_chars_max,
        "ledger.v1.IssueEnrolmentCodeRequest.person_token": insurer_id_chars_max,
        "ledger.v1.IssueEnrolmentCodeRequest.ttl": 8,
        "ledger.v1.GetBeneficiaryResolutionsRequest.person_token": insurer_id_chars_max,
        "ledger.v1.GrantBeneficiaryResolutionsRequest.person_token": insurer_id_chars_max,
        "ledger.v1.GrantBeneficiaryResolutionsRequest.reason": resolution_grant_reason_chars_max,
        "ledger.v1.GrantBeneficiaryResolutionsRequest.request_id": (
            resolution_grant_request_id_chars_max
        ),
        "payments.v1.GetContributionStatusRequest.person_token": insurer_id_chars_max,
        "payments.v1.GetContributionStatusRequest.jurisdiction": 2,
    }
)
"""Per-field bounds: characters of a string, bytes of a bytes field, elements of a repeated one."""
request_integer_max: Final = 2**63 - 1
"""Largest value of any unsigned 64-bit request field: storage keeps indexes and sizes as int64."""

# Fairness: what one connection or one caller may hold, so that one cannot hurt the others.
connection_streams_max: Final = 4096
"""Concurrent calls (HTTP/2 streams) one connection may open: a backstop far above
``caller_calls_in_flight_max``. A stream over it is reset (REFUSED_STREAM), which a gRPC client
still writing its requests reports as INTERNAL; the per-caller limit answers clearly first."""
server_pending_calls_max: Final = 4 * connection_streams_max
"""Calls that may wait for the server to take them; grpc cancels the rest (default 1000)."""
server_pending_call_seconds_max: Final = 300
"""How long a call may wait for the server to take it before grpc cancels it (grpc's default,
30 s, cancelled 1,449 of a burst of 2,000 streams on one connection at a load of 15 on 2 cores:
CANCELLED, which a client cannot tell from its own cancellation). A caller's deadline still
bounds its own wait; this bounds the wait of a caller without one."""
connection_idle_ms_max: Final = 5 * 60 * 1000
"""A connection with no call for this long is closed by the server (ServerConfig may shorten)."""
handshake_ms_max: Final = 10_000
"""A connection must finish its handshake within this (a silent socket is dropped)."""
keepalive_interval_ms: Final = 60_000
"""The server pings a connection quiet for this long, to find peers that vanished."""
keepalive_timeout_ms: Final = 20_000
"""A ping unanswered for this long closes the connection."""
client_ping_interval_ms_min: Final = 10_000
"""Clients may ping at most this often (more often is abuse: the connection is closed)."""
caller_calls_in_flight_max: Final = 1024
"""Calls one caller may have under way at once; beyond, RESOURCE_EXHAUSTED with a retry hint."""
request_id_chars_max: Final = 64
"""The longest ``x-request-id`` metadata the call log takes from a caller (else it makes one)."""
trace_endpoint_chars_max: Final = 2048
"""The longest OTLP collector URL ``serve --trace-otlp-endpoint`` takes (ledger.tracing)."""
read_threads_max: Final = 4
"""Threads of the read pool (servicer reads), apart from the sequencer's own writer thread."""
read_queue_max: Final = 256
"""Reads waiting for a read thread; beyond, RESOURCE_EXHAUSTED with a retry hint."""
caller_admissions_max: Final = 64
"""Events of one caller being admitted (signature, parse, rules) at once; more wait their turn
(back-pressure, not a refusal), so one caller's flood cannot fill the event loop."""
caller_read_queue_max: Final = 64
"""Reads of one caller waiting for a read thread; beyond, RESOURCE_EXHAUSTED with a retry hint
(so one caller cannot fill ``read_queue_max`` and refuse everyone else's reads)."""
service_threads_max: Final = 4
"""Threads of the loop's default executor (key lookups, access records, jurisdiction lookups),
apart from the read pool and the writer."""
retry_after_ms: Final = 200
"""The retry hint (google.rpc.RetryInfo) sent with a RESOURCE_EXHAUSTED for load."""
enrolment_wrong_codes_max: Final = 5
"""Wrong enrolment codes a party may try against its current code; then every try (the right
code too) is refused RESOURCE_EXHAUSTED until the operator issues a new code."""
enrolment_code_ttl_max: Final = dt.timedelta(days=30)
"""The longest an enrolment code may stay valid (``enrol issue --ttl``)."""
enrolment_code_bytes: Final = 20
"""Random bytes in an enrolment code (160 bits: guessing is hopeless within the tries allowed)."""
enrolment_csr_bytes_max: Final = 8192
"""The largest PEM certificate signing request ``EnrolmentService/Enrol`` reads."""
enrolment_code_chars_max: Final = 64
"""The longest enrolment code ``Enrol`` compares (a code is 32 characters)."""
enrolled_certificate_validity: Final = dt.timedelta(days=90)
"""How long a certificate obtained by enrolment is valid (re-enrol with a new code after)."""

# Coverage rules over time (ledger/coverage/rules.py; docs/compliance.md gives each its source).
insurer_change_notice_days_min: Final = 30
"""Days between an ``InsurerChangeNotified`` entry's ledger date and the effective date of the
``PolicyCancelled`` (reason INSURER_CHANGE) it announces (CCHI: at least 30 days' notice)."""
cancellation_backdating_days_max: Final[Mapping[str, int]] = MappingProxyType(
    {"DEATH": 365, "FINAL_EXIT": 365, "DEPENDENT_LOST_STATUS": 90}
)
"""How far before its own ledger date a cancellation may take effect, by reason: only reasons
that are facts of the past may be back-dated at all (illustrative figures: the CCHI text sets
none; a death may be reported late, a final exit is recorded by the passport authority)."""
newborn_backdating_days_max: Final = 30
"""A member added with a birth date may be covered from birth (before the entry's ledger date)
only when the entry comes at most this many days after the birth; later, coverage starts no
earlier than the ledger date and the days since birth count as uninsured (illustrative figure)."""
premium_grace_days: Final = 30
"""Days after an instalment's due date before an unpaid instalment stops the policy counting as
coverage, from the due date until paid (illustrative figure: the CCHI text says "on time")."""

# Task A (issue 10): residence permits, CheckEmployer and ComputeArrears (docs/compliance.md).
permit_id_chars_max: Final = 128
"""Longest permit number an authority may give."""
permit_members_max: Final = 32
"""Members one permit (or one renewal) may name besides its holder: a household's dependents
and domestic workers."""
permit_term_days_max: Final = 3 * 366
"""Longest permit period (a Saudi residence permit runs one or two years; margin for renewals
that extend by two years)."""
permit_entry_before_start_days_max: Final = 366
"""How long before a permit's first day its holder's entry date may lie (a worker enters on a
visa; the permit follows within months)."""
employer_page_default: Final = 100
"""People per CheckEmployer page when the request names no page size."""
employer_page_max: Final = 500
"""Most people one CheckEmployer page may hold (an employer of 500 workers fits in one)."""
employer_days_max: Final = 3 * 366
"""Longest date range CheckEmployer and ComputeArrears answer for."""
employer_people_max: Final = 100_000
"""Most obligations ComputeArrears reads for one establishment (it is not paged)."""
# Penalty decisions (ledger/compliance/decisions.py; docs/compliance.md "Penalty decisions").
penalty_payment_days: Final = 60
"""Days after a ``PenaltyAssessed`` entry's ledger date within which ``PenaltyPaid`` entries are
taken (CCHI employer-compliance policy: 60 days to pay)."""
penalty_objection_days: Final = 30
"""Days after a ``PenaltyAssessed`` entry's ledger date within which an objection is taken
(CCHI employer-compliance policy: 30 days to object)."""
penalty_grievance_days: Final = 60
"""Days within which a grievance before the Board of Grievances is taken, after the ledger date
of the rejection of the objection, else of the assessment (CCHI employer-compliance policy:
60 days to take it to the Board of Grievances)."""
penalty_lines_max: Final = 500
"""People one ``PenaltyAssessed`` names at most (a larger employer gets several decisions; 500
lines stay well within ``envelope_payload_bytes_max``)."""
penalty_decisions_page_max: Final = 100
"""Decisions one ``ListPenaltyDecisions`` page returns at most."""
penalty_decisions_page_default: Final = 20
"""Decisions a ``ListPenaltyDecisions`` page returns when the request names no page size."""
# Task C (issue 10 item 9): CoverageService.WatchCoverage, the change feed (docs/coverage.md).
watches_per_caller_max: Final = 8
"""Watches one caller may have open at once; beyond, RESOURCE_EXHAUSTED (a watch holds a task
and reads the log at every commit, so a caller's watches are bounded well below its calls)."""
watch_heartbeat_seconds_default: Final = 30
"""Seconds between heartbeats of a quiet watch when the request leaves it 0."""
watch_heartbeat_seconds_max: Final = 300
"""The longest heartbeat interval a watch may ask for (clients detect a dead stream by it)."""
watch_entries_per_read_max: Final = 256
"""Entries a watch reads from the log in one read (then it sends their changes)."""
watch_replay_entries_max: Final = 100_000
"""Entries about a subject a watch replays to start from a tree size; beyond, RESOURCE_EXHAUSTED
(a subject with that much history is watched from a later tree size)."""
watch_permit_notice_days: Final = 90
"""ENDS_BEFORE_PERMIT: coverage ending at most this many days before the permit's end is reported
(illustrative figure, issue 10 item 9's "within N days")."""
# The verification page's read-only HTTP listener (serve --verify-page-port; docs/verify-page.md).
verify_page_connections_max: Final = 16
"""Connections the page's listener serves at once; more are closed unanswered (it serves one
static file: a browser needs one or two)."""
verify_page_request_seconds_max: Final = 10.0
"""How long the listener waits on a connection's request line and headers before closing it."""
verify_page_path_chars_max: Final = 256
"""The longest request target the listener reads (its paths are a few characters); longer: 414."""
# The metrics listener (serve --metrics-port; ledger/metrics.py, ledger/http_listener.py).
metrics_connections_max: Final = 8
"""Connections the metrics listener serves at once; more are closed unanswered (a Prometheus
server scrapes with one; with serve --workers N the supervisor scrapes each child with one)."""
metrics_request_seconds_max: Final = 10.0
"""How long the metrics listener waits on a connection's request before closing it."""
# Read standby (serve --read-database; ledger/storage/read_routing.py; docs/operations.md).
standby_lag_entries_max: Final = 1000
"""A read standby more than this many entries behind the newest tree size the server knows is
bypassed (the primary answers). About a second of full-speed submission: a standby within it
answers reads whose freshness nobody asked for; a caller that needs more names its receipt's
size (``x-min-tree-size``) and never gets an answer from before it (``serve --read-lag-max``
overrides the bound)."""
min_tree_size_metadata: Final = "x-min-tree-size"
"""The call metadata in which a reader names the smallest tree size an answer may be computed
at (a receipt's checkpoint size): a decimal number up to 2**63 - 1."""
# Insurance cards and signed documents (task E; docs/cards.md).
card_validity_days_max: Final = 1830
"""The longest a card may be valid: ``valid_until`` at most this many days after the issuing
entry's ledger date (five years, as identity and insurance cards commonly are)."""
registration_certificate_validity_days: Final = 90
"""A registration certificate is valid this many days from the ledger date it was issued on
(never past the registration's last day): a fresh one is a request away."""
# Funded cohorts (task D, issue 11; ledger/funds/, docs/funds.md).
cohort_beneficiaries_per_event_max: Final = 250
"""Beneficiaries one ``CohortEnrolled`` event may add. 250 fits one person-token call
(``person_tokens_per_call_max``), keeps the event near 12 KiB (a quarter of
``envelope_payload_bytes_max``) and one projector step short; 25,000 beneficiaries (the size of
one re-targeting announcement) are 100 events, streamed in one ``SubmitEvents`` call."""
cohort_id_chars_max: Final = 128
"""The longest cohort id."""
cohort_months_max: Final = 60
"""The longest cohort period, in months (five years)."""
fund_totals_months_max: Final = 36
"""The most months one ``FundService/GetFundTotals`` request spans."""
fund_totals_rows_max: Final = 5000
"""The most rows one ``GetFundTotals`` answer carries (funders x states x months); a request
that would need more is refused RESOURCE_EXHAUSTED and must ask for fewer months or one state."""
fund_currency: Final = "SDG"
"""The currency of cohort contributions (Sudanese pound, ISO 4217, 2 decimals)."""

# Task F (issue 11, items 4-5): beneficiaries declared by the insured (docs/beneficiaries.md).
declared_beneficiaries_max: Final = 16
"""People one BeneficiariesDeclared may declare (a spouse and children: CNOPS counts no more
than a household holds; the bound keeps one entry small)."""
beneficiary_people_resolved_max: Final = 24
"""Distinct people, themselves aside, one person (role beneficiary) may ever obtain the token of
(IdentityService.GetPersonTokens; docs/privacy.md): a large household and its changes over the
years. One declaration names at most ``declared_beneficiaries_max`` (16) people; law 65-00
covers up to four spouses and the children in the insured's charge, and a spouse replaced or
children born later are declared again, so 24 leaves a large family room while a person
cannot tokenize a neighbourhood. A lifetime count, not a rate; an identifier asked again is
not counted again (a person erased since gets a new token, which is)."""
beneficiary_resolutions_grant_max: Final = 24
"""People one operator grant (AdminService.GrantBeneficiaryResolutions) may add to a person's
allowance: one more bound's worth (a family's slots spent on typos, a large family's second
generation); a person who needs more is granted again, each grant with its reason."""
beneficiary_resolutions_granted_max: Final = 96
"""The most people all of one person's grants may add (so at most 24 + 96 = 120 people in all):
four more bounds' worth over a lifetime. Past it the grant is refused (RESOURCE_EXHAUSTED
``BENEFICIARY_GRANTS_LIMIT``): the bound protects the people resolved, and no family needs more;
a person who does is a case for the fund, not for more tokens."""
declaration_documents_max: Final = 8
"""Document references one declared person may carry."""
document_reference_chars_max: Final = 128
"""The longest document reference (the fund's opaque reference of an uploaded document)."""
declaration_id_chars_max: Final = 128
"""The longest declaration id an insured may choose."""
decision_reason_chars_max: Final = 256
"""The longest reason a fund gives for its decision on a declaration."""
declared_child_age_max_years: Final = 21
"""Law 65-00, article 5: a child in the insured's charge is covered up to 21 (completed years)."""
declared_child_in_education_age_max_years: Final = 26
"""Law 65-00, article 5: up to 26 for a child in higher education (a school certificate)."""
# Several processes (serve --workers N; ledger/rpc/supervisor.py; docs/operations.md).
workers_max: Final = 64
"""Worker processes one supervisor runs at most (a typo of 1000 would fork-bomb the host)."""
process_restarts_per_minute_max: Final = 5
"""Restarts of one process (a worker, or the sequencer) within a minute that the supervisor
makes; one more and it gives up: a process that cannot stay up is a fault to fix (a bad
database, a broken deploy), not one to hide behind endless restarts. It then stops everything
and exits non-zero, naming the process."""
process_restart_delay_seconds_max: Final = 5.0
"""The longest pause before restarting a process that died (doubling from 0.1 s with each
restart within the minute)."""
process_ready_seconds_max: Final = 120.0
"""How long a started process may take to say it is ready (a bound against a hang)."""
database_pool_size_default: Final = 16
"""PostgreSQL connections one ``serve`` keeps open, all its processes together, unless
``--database-pool-size`` says otherwise (ledger.config.divide_database_pool divides it)."""
database_pool_overflow_default: Final = 16
"""Connections one ``serve`` may open beyond those under load, all processes together, unless
``--database-pool-overflow`` says otherwise. Three ``serve`` at the defaults (3 x 32) fit
PostgreSQL's default ``max_connections`` of 100."""
database_pool_process_size_min: Final = 2
"""Kept connections each process needs at least: the sequencer's write transaction holds one
for a whole batch while its reads go on; a worker's reads and key lookups share the rest."""
database_pool_process_overflow_min: Final = 0
"""Overflow connections each process needs at least: none (a fixed pool is a choice)."""
