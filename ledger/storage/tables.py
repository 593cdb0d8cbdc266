"""The ledger's tables (SQLAlchemy Core). Alembic migrations create them; this module queries them.

``log_entries``, ``tree_nodes`` and ``checkpoints`` are append-only (database triggers refuse
UPDATE and DELETE). ``insurer_keys`` is the signing-key registry: a projection of the operator's
KeyRegistered / KeyRevoked events, like the other projections.
Instants are stored as integer microseconds since the Unix epoch, UTC, identical on every engine.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "PROJECTION_TABLES",
    "beneficiary_declarations",
    "cards",
    "checkpoint_cosignatures",
    "checkpoints",
    "coverages",
    "declared_beneficiaries",
    "fee_refunds",
    "fund_cohort_members",
    "fund_cohorts",
    "fund_contributions",
    "insurer_change_notices",
    "insurer_keys",
    "insurers",
    "log_entries",
    "metadata",
    "obligations",
    "penalty_decision_entries",
    "penalty_decisions",
    "penalty_lines",
    "permits",
    "policies",
    "premium_instalments",
    "premiums",
    "subject_entries",
    "transfer_gaps",
    "tree_nodes",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

log_entries = Table(
    "log_entries",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("payload_sha256", LargeBinary(32), nullable=False),
    Column("entry_bytes", LargeBinary, nullable=False),
    UniqueConstraint("insurer_id", "event_id", name="uq_log_entries_insurer_event"),
    Index("ix_log_entries_leaf_hash", "leaf_hash", unique=True),
)
"""One row per leaf. ``entry_bytes`` is the LedgerEntry exactly as hashed into the leaf."""

tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("node_key", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
"""Every complete subtree's hash; ``node_key`` = level << 56 | index (see ledger.storage.nodes)."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note_bytes", LargeBinary, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)
"""One signed checkpoint per committed batch; ``note_bytes`` is the C2SP note as signed."""

checkpoint_cosignatures = Table(
    "checkpoint_cosignatures",
    metadata,
    Column("tree_size", BigInteger, nullable=False, autoincrement=False),
    Column("witness_name", String(256), nullable=False),
    Column("key_id", LargeBinary(4), nullable=False),
    Column("signature_line", LargeBinary, nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("tree_size", "witness_name", "key_id"),
)
"""Witness cosignatures (C2SP tlog-cosignature) of our checkpoints: ``signature_line`` is the
line the witness returned, verbatim (verified before it is stored); one per witness and size."""

insurer_keys = Table(
    "insurer_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("insurer_id", String(64), nullable=False, index=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("revoked_at_us", BigInteger, nullable=True),
    Column("registered_at_us", BigInteger, nullable=False),
    Column("role", String(16), nullable=False),
    Column("jurisdiction", String(2), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    Column("revoked_leaf_index", BigInteger, nullable=True),
)
"""Signing keys (Ed25519) with validity windows and their principal's role; ``key_id`` is
derived from the public key. ``leaf_index``: the KeyRegistered entry; ``revoked_at_us`` and
``revoked_leaf_index``: the KeyRevoked entry, once revoked. ``registered_at_us``: the
registration's integration time."""

# Projections: derived from the log, written in the same transaction as the entries they come
# from, and recomputable from the log alone (``policy-ledger rebuild``). Dates are civil dates.
# Each row names the entries it was derived from, so a rebuild that disagrees can name the first.

insurers = Table(
    "insurers",
    metadata,
    Column("insurer_id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("licence_number", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("licensed_from", Date, nullable=False),
    Column("suspended_from", Date, nullable=True),
    Column("leaf_index", BigInteger, nullable=False),
)
"""Insurers the operator licensed; ``status`` is ``licensed`` or ``suspended``."""

policies = Table(
    "policies",
    metadata,
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("sponsor_key", String(64), nullable=False),
    Column("holder_key", String(200), nullable=False),
    Column("plan", String(64), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("annual_premium_minor", BigInteger, nullable=False),
    Column("cancelled_from", Date, nullable=True),
    Column("cancel_reason", String(32), nullable=True),
    Column("issued_leaf_index", BigInteger, nullable=False),
    Column("cancelled_leaf_index", BigInteger, nullable=True),
    Column("instalments", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("insurer_id", "policy_id", name="pk_policies"),
    Index("ix_policies_sponsor_key", "sponsor_key"),
    Index("ix_policies_policy_id", "policy_id"),
)
"""One row per issued policy; the stated period, and the cancellation when there is one.
``instalments``: how many the premium schedule states (0: none, no instalment obligation), so
a coverage read looks up schedules only for policies that have one."""

coverages = Table(
    "coverages",
    metadata,
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("person_key", String(64), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("sponsor_key", String(64), nullable=False),
    Column("relationship", String(16), nullable=False),
    Column("end_reason", String(48), nullable=False),
    Column("leaf_indexes", String(2000), nullable=False),
    PrimaryKeyConstraint(
        "insurer_id", "policy_id", "person_key", "start_date", name="pk_coverages"
    ),
    Index("ix_coverages_person_key_start", "person_key", "start_date"),
    Index("ix_coverages_sponsor_key", "sponsor_key"),
)
"""One person's covered days under one policy (``end_date`` inclusive; ``end < start`` when a
cancellation took effect on the first day). ``leaf_indexes``: ascending, comma-separated."""

premiums = Table(
    "premiums",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("payer_type", String(16), nullable=False),
    Column("payer_key", String(200), nullable=False),
    Column("paid_on", Date, nullable=True),
    Index("ix_premiums_insurer_id_policy", "insurer_id", "policy_id"),
)
"""Premium payments, with the payer (the sponsor, the employer or a third party such as a fund).
``paid_on`` is the entry's ledger date, from which the payment counts (NULL only for rows
recorded before migration 0012: read as paid in time)."""

premium_instalments = Table(
    "premium_instalments",
    metadata,
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("position", Integer, nullable=False, autoincrement=False),
    Column("due_date", Date, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    PrimaryKeyConstraint("insurer_id", "policy_id", "position", name="pk_premium_instalments"),
)
"""The premium schedule a policy states (``PolicyIssued.instalments``), in the policy's
currency. A policy with none has no instalment obligation (docs/compliance.md)."""

subject_entries = Table(
    "subject_entries",
    metadata,
    Column("subject", String(256), nullable=False),
    Column("leaf_index", BigInteger, nullable=False, autoincrement=False),
    PrimaryKeyConstraint("subject", "leaf_index", name="pk_subject_entries"),
)
"""Which entries name which subject: ``policy:<insurer>:<policy>``, ``policy-id:<policy>``,
``person:<person key>``, ``insurer:<insurer>``; for history and search."""

fee_refunds = Table(
    "fee_refunds",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("refund_reference", String(128), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    UniqueConstraint("insurer_id", "refund_reference", name="uq_fee_refunds_insurer_reference"),
    Index("ix_fee_refunds_insurer_id_policy", "insurer_id", "policy_id"),
)
"""Refunds of collected renewal fees (the fee itself is a ``premiums`` row of its renewal)."""

insurer_change_notices = Table(
    "insurer_change_notices",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("new_insurer_id", String(64), nullable=False),
    Column("notified_on", Date, nullable=False),
    Index("ix_insurer_change_notices_policy", "insurer_id", "policy_id", "notified_on"),
)
"""InsurerChangeNotified entries: ``notified_on`` is the entry's ledger date (the UTC date of
its batch's integration time), from which the 30 days' notice counts; ``new_insurer_id`` is
empty when the event names none."""

transfer_gaps = Table(
    "transfer_gaps",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("replaced_insurer_id", String(64), nullable=False),
    Column("replaced_policy_id", String(128), nullable=False),
    Column("first_day", Date, nullable=False),
    Column("last_day", Date, nullable=False),
    Index("ix_transfer_gaps_replaced", "replaced_insurer_id", "replaced_policy_id"),
    Index("ix_transfer_gaps_policy", "insurer_id", "policy_id"),
)
"""Replacement policies (``PolicyIssued.replaces``) that did not start the day after the old
one's last covered day: the uncovered days between (inclusive), by the replacing entry."""

# Task A (issue 10): residence permits and the obligations they create (docs/compliance.md).

permits = Table(
    "permits",
    metadata,
    Column("authority_id", String(64), nullable=False),
    Column("permit_id", String(128), nullable=False),
    Column("holder_token", String(64), nullable=False),
    Column("sponsor_key", String(256), nullable=False),
    Column("entry_date", Date, nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("ended_from", Date, nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("leaf_indexes", String(2000), nullable=False),
    PrimaryKeyConstraint("authority_id", "permit_id", name="pk_permits"),
)
"""Residence permits (PermitIssued / PermitRenewed / PermitEnded), per authority.
``sponsor_key``: ``org:<country>:<establishment number>`` or ``person:<person token>``;
``end_date`` is the current last day (renewals move it); ``ended_from`` the first day without
the permit when it ended early."""

obligations = Table(
    "obligations",
    metadata,
    Column("authority_id", String(64), nullable=False),
    Column("permit_id", String(128), nullable=False),
    Column("person_token", String(64), nullable=False),
    Column("relationship", String(32), nullable=False),
    Column("obligated_from", Date, nullable=False),
    Column("obligated_until", Date, nullable=False),
    Column("responsible_key", String(256), nullable=False),
    Column("leaf_indexes", String(2000), nullable=False),
    PrimaryKeyConstraint("authority_id", "permit_id", "person_token", name="pk_obligations"),
    Index("ix_obligations_responsible_key", "responsible_key", "person_token"),
)
"""Who must be insured, from when to when (inclusive; ``obligated_until`` before
``obligated_from`` when a permit ended before the obligation began), and who is responsible
(``responsible_key``: the permit's sponsor key). One row per person per permit."""
# Penalty decisions (task B; ledger/compliance/decision_store.py, migration 0014).

penalty_decisions = Table(
    "penalty_decisions",
    metadata,
    Column("decision_id", String(128), primary_key=True),
    Column("regulator_id", String(64), nullable=False),
    Column("establishment_number", String(128), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("schedule_version", String(64), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("computed_at_tree_size", BigInteger, nullable=False),
    Column("assessed_on", Date, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    Index("ix_penalty_decisions_establishment", "establishment_number", "leaf_index"),
)
"""``PenaltyAssessed`` decisions (never changed once written): ``assessed_on`` is the entry's
ledger date, from which the payment, objection and grievance windows count."""

penalty_lines = Table(
    "penalty_lines",
    metadata,
    Column("decision_id", String(128), nullable=False),
    Column("position", Integer, nullable=False, autoincrement=False),
    Column("person_token", String(64), nullable=False),
    Column("uninsured_days", Integer, nullable=False),
    Column("arrears_minor", BigInteger, nullable=False),
    Column("fine_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("decision_id", "position", name="pk_penalty_lines"),
)
"""Each decision's per-person figures, in the decision's currency."""

penalty_decision_entries = Table(
    "penalty_decision_entries",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("decision_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("ledger_date", Date, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("reference", String(256), nullable=False),
    Index("ix_penalty_decision_entries_decision", "decision_id", "leaf_index"),
)
"""What followed each decision, by entry: ``kind`` FILED (``stage`` OBJECTION or GRIEVANCE),
REJECTED (the stage rejected), PAID (``amount_minor``) or WITHDRAWN (``reference``: the
reason); ``ledger_date`` is the entry's."""
# Task E (cards).
cards = Table(
    "cards",
    metadata,
    Column("card_number", String(16), primary_key=True),
    Column("insurer_id", String(64), nullable=False),
    Column("person_key", String(64), nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("issued_leaf", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_leaf", BigInteger, nullable=True),
    Column("replaced_by", String(16), nullable=True),
    Index("ix_cards_person_key", "person_key", "insurer_id"),
)
"""Insurance cards (CardIssued, CardReplaced, CardRevoked): one row per number ever issued.
``issued_on`` is the issuing entry's ledger date; ``status`` is ``CURRENT``, ``REPLACED`` or
``REVOKED`` (expiry is not stored: it is ``valid_until`` against the ledger date);
``status_leaf`` is the entry that replaced or revoked it, ``replaced_by`` the new number."""
# Task D (issue 11): funded cohorts (ledger/funds/, docs/funds.md; migration 0016).
fund_cohorts = Table(
    "fund_cohorts",
    metadata,
    Column("cohort_id", String(128), primary_key=True),
    Column("funder_id", String(64), nullable=False),
    Column("fund_id", String(64), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("monthly_minor", BigInteger, nullable=False),
    Column("beneficiaries", Integer, nullable=False),
    Column("ended_from", Date, nullable=True),
    Column("leaf_index", BigInteger, nullable=False),
    Column("end_leaf_index", BigInteger, nullable=True),
    Index("ix_fund_cohorts_funder_id", "funder_id"),
)
"""Cohorts of funded beneficiaries (``CohortEnrolled``; ``leaf_index``: the first one), their
count so far, and their end (``CohortEnded``)."""

fund_cohort_members = Table(
    "fund_cohort_members",
    metadata,
    Column("cohort_id", String(128), nullable=False),
    Column("person_token", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("state_code", String(8), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    PrimaryKeyConstraint("cohort_id", "person_token", name="pk_fund_cohort_members"),
    Index("ix_fund_cohort_members_person_token", "person_token"),
)
"""A cohort's beneficiaries: ``position`` is the 1-based enrolment order (a contribution pays
for the first ``beneficiary_count``), ``state_code`` ISO 3166-2:SD."""

fund_contributions = Table(
    "fund_contributions",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("cohort_id", String(128), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("beneficiary_count", Integer, nullable=False),
    Index("ix_fund_contributions_cohort_id", "cohort_id"),
)
"""``ContributionPaid`` entries: whole months of a cohort, for its first ``beneficiary_count``
beneficiaries."""

# Task F (issue 11, item 4): declarations of beneficiaries (ledger/coverage/declarations.py).
beneficiary_declarations = Table(
    "beneficiary_declarations",
    metadata,
    Column("declared_by", String(64), nullable=False),
    Column("declaration_id", String(128), nullable=False),
    Column("insurer_id", String(64), nullable=False),
    Column("policy_id", String(128), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("declared_leaf_index", BigInteger, nullable=False),
    Column("decided_leaf_index", BigInteger, nullable=True),
    PrimaryKeyConstraint("declared_by", "declaration_id", name="pk_beneficiary_declarations"),
    Index("ix_beneficiary_declarations_policy", "insurer_id", "policy_id"),
)
"""BeneficiariesDeclared entries (``declared_by``: the insured's person token) and where each
stands: ``PENDING`` until the fund's DeclarationDecided makes it ``ACCEPTED`` or ``REJECTED``."""

declared_beneficiaries = Table(
    "declared_beneficiaries",
    metadata,
    Column("declared_by", String(64), nullable=False),
    Column("declaration_id", String(128), nullable=False),
    Column("position", Integer, nullable=False, autoincrement=False),
    Column("person_token", String(64), nullable=False),
    Column("relationship", String(32), nullable=False),
    Column("documents", String(4096), nullable=False),
    PrimaryKeyConstraint(
        "declared_by", "declaration_id", "position", name="pk_declared_beneficiaries"
    ),
    Index("ix_declared_beneficiaries_person", "person_token"),
)
"""The people of each declaration, in order; ``documents`` is the JSON list of the
``[kind, reference]`` pairs the event carries."""

APPEND_ONLY_TABLES = ("log_entries", "tree_nodes", "checkpoints")
PROJECTION_TABLES = (
    insurer_keys,
    insurers,
    policies,
    coverages,
    premiums,
    premium_instalments,
    fee_refunds,
    insurer_change_notices,
    transfer_gaps,
    subject_entries,
    # Task A (issue 10).
    permits,
    obligations,
    penalty_decisions,
    penalty_lines,
    penalty_decision_entries,
    cards,
    fund_cohorts,
    fund_cohort_members,
    fund_contributions,
    beneficiary_declarations,
    declared_beneficiaries,
)
