"""The authorization table: which role may call which RPC, and how the caller's name limits it.

One table, as data, enforced by one interceptor (ledger/rpc/interceptor.py) before any
servicer runs. **Default deny**: a method without a row is refused, whoever calls it. Health
checking and reflection are open (they reveal nothing but which services exist). Extensions
(the payments' RenewalService) add their rows through ``ServerContext.authorization``, so the
ledger never imports them. docs/security.md renders this table (and a test keeps them equal).

How a caller's name limits a call (:class:`Limit`):
  ANY          the role is enough;
  SIGNER       the DSSE-verified signer of every submitted event must be the caller
               (insurer/acme-health submits only events signed as acme-health; operator/<any>
               only events signed as the operator); checked after admission verified the
               signature, by :func:`check_signer` (the ledger calls it, the servicers do not);
  JURISDICTION the request's jurisdiction must be the caller's name (portal/KW asks for KW);
               a request names it in a field, or a resolver the row carries finds it (e.g. the
               jurisdiction of the quote a payment pays).
  PERSON       the person the request names (its ``person_token``) must be the caller (a
               beneficiary's name is its person token) or a person the caller declared and
               the fund accepted; the row's ``people`` resolver answers that set
               (issue 11, item 4; docs/beneficiaries.md).
"""

from __future__ import annotations

import contextvars
import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field

from ledger.coverage.projector import OPERATOR_ID
from ledger.errors import PermissionDenied
from ledger.rpc.identity import Caller

__all__ = [
    "OPEN_METHOD_PREFIXES",
    "AuthorizationTable",
    "Grant",
    "Limit",
    "PeopleResolver",
    "RememberingResolver",
    "Rule",
    "beneficiary_rules",
    "check_signer",
    "enrolment_rules",
    "ledger_rules",
    "render_markdown",
    "signer_principal_required",
]

OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Methods any client may call, with or without a certificate."""


class Limit(enum.Enum):
    """How the caller's name limits a call (see the module doc)."""

    ANY = "any name"
    SIGNER = "signer = caller"
    JURISDICTION = "jurisdiction = caller"
    PERSON = "person = caller or their accepted beneficiary"


JurisdictionResolver = Callable[[object], str | None]
"""Finds the jurisdiction of what a request names (a quote, a payment). None: it names nothing
that exists, and the servicer refuses the request itself (NOT_FOUND, INVALID_ARGUMENT). Runs in
a thread: it may read the database."""


class RememberingResolver:
    """A :data:`JurisdictionResolver` that remembers what it found, for facts that never change
    (a quote's jurisdiction; the quote a payment is for): a request naming something it knows
    is decided on the event loop at once (:meth:`known`), with no thread and no database read.
    At most ``keep`` answers, the least recently used dropped first; "names nothing" is never
    remembered (it may exist by the next call). ``key``: what a request names, or None."""

    def __init__(
        self,
        find: JurisdictionResolver,
        key: Callable[[object], Hashable | None],
        *,
        keep: int,
    ) -> None:
        self._find = find
        self._key = key
        self._keep = keep
        self._known: OrderedDict[Hashable, str] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, request: object) -> str | None:
        """The jurisdiction of what ``request`` names, if remembered; else None (ask
        :meth:`__call__`, in a thread)."""
        key = self._key(request)
        if key is None:
            return None
        with self._lock:
            jurisdiction = self._known.get(key)
            if jurisdiction is not None:
                self._known.move_to_end(key)
            return jurisdiction

    def remember(self, key: Hashable, jurisdiction: str) -> None:
        """Remember that what ``key`` names is of ``jurisdiction`` (told by whoever made it,
        once it is stored: told earlier, this process would refuse a call naming it that
        another process, finding nothing, lets through to be answered NOT_FOUND)."""
        with self._lock:
            self._known[key] = jurisdiction
            self._known.move_to_end(key)
            while len(self._known) > self._keep:
                self._known.popitem(last=False)

    def __call__(self, request: object) -> str | None:
        jurisdiction = self._find(request)
        key = self._key(request)
        if jurisdiction is not None and key is not None:
            self.remember(key, jurisdiction)
        return jurisdiction


PeopleResolver = Callable[[str], frozenset[str]]
"""For Limit.PERSON: the person tokens a caller (named by its own person token) may read. Runs
in a thread: it reads the database."""


@dataclass(frozen=True)
class Grant:
    """One role allowed on a method, and how its name limits the call."""

    role: str
    limit: Limit = Limit.ANY
    jurisdiction_field: str = "jurisdiction"
    """For JURISDICTION: the request field naming it (when no resolver is given)."""
    resolver: JurisdictionResolver | None = field(default=None, compare=False)
    """For JURISDICTION: how to find it when the request only names a quote or payment."""
    people: PeopleResolver | None = field(default=None, compare=False)
    """For PERSON: the tokens the caller may read (the request names one in ``person_token``)."""

    def describe(self) -> str:
        """``role`` or ``role (limit)``, for the rendered table."""
        if self.limit is Limit.ANY:
            return self.role
        if self.limit is Limit.JURISDICTION and self.resolver is None:
            return f"{self.role} (request.{self.jurisdiction_field} = name)"
        if self.limit is Limit.JURISDICTION:
            return f"{self.role} (jurisdiction of the quote/payment = name)"
        if self.limit is Limit.PERSON:
            return f"{self.role} (request.person_token = name or a beneficiary it declared)"
        return f"{self.role} (event signer = {'operator' if self.role == 'operator' else 'name'})"


@dataclass(frozen=True)
class Rule:
    """A row: a full method name and who may call it."""

    method: str
    grants: tuple[Grant, ...] = ()
    any_authenticated: bool = False
    """True: every authenticated caller may call it, whatever its role: the log's reads
    (checkpoints, proofs, entries), which carry no personal data."""
    without_certificate: bool = False
    """True: callers without a client certificate may call it. Only the enrolment port's table
    has such a row (:func:`enrolment_rules`); the main port requires a certificate in TLS."""

    def grant_for(self, caller: Caller) -> Grant | None:
        """The grant that lets ``caller`` call, or None."""
        for grant in self.grants:
            if grant.role == caller.role:
                return grant
        return Grant(caller.role) if self.any_authenticated else None


class AuthorizationTable:
    """Full method name -> rule. Rows are added once, at start-up; a duplicate is a bug."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        self.add(rules)

    def add(self, rules: Iterable[Rule]) -> None:
        """Add rows (an extension adds its own); refuse a method that already has one."""
        for rule in rules:
            if rule.method in self._rules:
                raise ValueError(f"two authorization rows for {rule.method}")
            self._rules[rule.method] = rule

    def rule(self, method: str) -> Rule | None:
        """The row of ``method`` (``/package.Service/Method``), or None: refused."""
        return self._rules.get(method)

    def __iter__(self) -> Iterator[Rule]:
        return iter(sorted(self._rules.values(), key=lambda rule: rule.method))


def _rows(service: str, grants: dict[str, tuple[Grant, ...]]) -> list[Rule]:
    return [Rule(f"/{service}/{method}", granted) for method, granted in grants.items()]


_SUBMITTERS = (
    Grant("insurer", Limit.SIGNER),
    Grant("authority", Limit.SIGNER),
    Grant("operator", Limit.SIGNER),
    Grant("regulator", Limit.SIGNER),  # penalty decisions (task B)
    Grant("funder", Limit.SIGNER),  # task D: its cohorts (docs/funds.md)
    Grant("beneficiary", Limit.SIGNER),  # Task F: a person signs their own declarations
)
_PERSON_READERS = (Grant("auditor"), Grant("operator"))
"""Who may read a person's data without a jurisdiction: the auditor (to check) and the
operator (to answer a person's own request). Portals check households only."""


_EMPLOYER_READERS = (
    Grant("operator"),
    Grant("auditor"),
    Grant("regulator"),
    Grant("portal", Limit.JURISDICTION),
)
"""Task A (issue 10): who may ask what an establishment is responsible for and owes: the
operator (for the regulator) and the auditor anywhere; a portal for establishments of its own
jurisdiction (the request's ``jurisdiction`` is the establishment's registering state); the
regulator, whose penalty decisions start from these figures."""


_PERSON_WRITERS = (
    Grant("insurer"),
    Grant("authority"),
    Grant("operator"),
    Grant("regulator"),  # its penalty decisions name the uninsured people (task B)
    Grant("funder"),  # its cohorts name their beneficiaries (task D)
    Grant("beneficiary"),  # Task F: the tokens of the people a person declares
)
"""Who may obtain person tokens: the roles whose events name people (docs/privacy.md), a
funder's cohorts included. A portal or an auditor asks by person ID and never needs a token. A
beneficiary is further limited by the vault, which knows the caller: every birth date given,
and at most ``limits.beneficiary_people_resolved_max`` people plus the operator's grants
(ledger/identity/vault.py, ledger/identity/resolution_grants.py)."""

_FUND_READERS = (
    Grant("funder", Limit.JURISDICTION, jurisdiction_field="funder_id"),
    Grant("operator"),
    Grant("auditor"),
    Grant("regulator"),
)
"""Task D (issue 11): who may read funded cohorts' totals; a funder its own only (its name in
``funder_id``)."""


_DECISION_READERS = (Grant("regulator"), Grant("operator"), Grant("auditor"))
"""Who may read penalty decisions (task B; docs/compliance.md "Penalty decisions")."""


def ledger_rules() -> list[Rule]:
    """The rows of the ledger's own services (Ledger, Coverage, Admin and Identity services)."""
    ledger = "ledger.v1.LedgerService"
    coverage = "ledger.v1.CoverageService"
    admin = "ledger.v1.AdminService"
    operator_only = (Grant("operator"),)
    return [
        *_rows(ledger, {"SubmitEvent": _SUBMITTERS, "SubmitEvents": _SUBMITTERS}),
        # The log names people by person token only (docs/privacy.md): any authenticated
        # party (a witness, a public auditor, an insurer checking its own entries) may read it.
        Rule(f"/{ledger}/GetCheckpoint", any_authenticated=True),
        Rule(f"/{ledger}/GetConsistencyProof", any_authenticated=True),
        Rule(f"/{ledger}/GetEntries", any_authenticated=True),
        Rule(f"/{ledger}/GetInclusionProof", any_authenticated=True),
        *_rows(
            coverage,
            {
                "GetCoverage": _PERSON_READERS,
                "CheckHousehold": (*_PERSON_READERS, Grant("portal", Limit.JURISDICTION)),
                "ListPolicyHistory": _PERSON_READERS,
                "FindEntries": _PERSON_READERS,
                "GetCoverageCertificate": _PERSON_READERS,
                # Task C (issue 10 item 9): the change feed, to whom CheckHousehold answers.
                "WatchCoverage": (*_PERSON_READERS, Grant("portal", Limit.JURISDICTION)),
                # Task E (cards): a document's holder shows it to anyone; the card or
                # certificate itself carries the person's identifier.
                "GetCard": _PERSON_READERS,
                "GetRegistrationCertificate": _PERSON_READERS,
            },
        ),
        # Task E (cards): a status names nobody (a number or a document the caller holds).
        Rule(f"/{coverage}/GetCardStatus", any_authenticated=True),
        Rule(f"/{coverage}/GetDocumentStatus", any_authenticated=True),
        *_rows(
            admin,
            {
                "ListInsurerKeys": operator_only,
                # A person's bound on the people they resolve: support reads it, the
                # operator raises it (docs/privacy.md, "A person asking for tokens").
                "GetBeneficiaryResolutions": operator_only,
                "GrantBeneficiaryResolutions": operator_only,
            },
        ),
        *_rows(
            "ledger.v1.IdentityService",
            {"GetPersonTokens": _PERSON_WRITERS, "LookUpPersonToken": operator_only},
        ),
        # Task A (issue 10): employers' obligations, arrears and fines.
        *_rows(coverage, {"CheckEmployer": _EMPLOYER_READERS}),
        *_rows("ledger.v1.ComplianceService", {"ComputeArrears": _EMPLOYER_READERS}),
        # Penalty decisions (task B): the regulators who decide, the operator, the auditor.
        # Portals do not: a decision concerns an employer, not a household's renewal.
        *_rows(
            "ledger.v1.ComplianceService",
            {"GetPenaltyDecision": _DECISION_READERS, "ListPenaltyDecisions": _DECISION_READERS},
        ),
        *_rows("ledger.v1.FundService", {"GetFundTotals": _FUND_READERS}),
    ]


def beneficiary_rules(people: PeopleResolver) -> list[Rule]:
    """The BeneficiaryService's rows (issue 11, item 4): a person reads their own record and
    their accepted beneficiaries' (``people``); the operator and auditors read any."""
    own = Grant("beneficiary", Limit.PERSON, people=people)
    return [
        Rule("/ledger.v1.BeneficiaryService/GetPersonRecord", (own, *_PERSON_READERS)),
        # The fund only for the people it insures (checked by the use case, which reads the
        # coverage); the operator for anyone.
        Rule(
            "/ledger.v1.BeneficiaryService/IssueEnrolmentCode",
            (Grant("insurer"), Grant("operator")),
        ),
    ]


def enrolment_rules() -> list[Rule]:
    """The enrolment port's table: its one method, for callers without a certificate (the
    one-time code in the request is the credential; ledger/rpc/enrolment_port.py)."""
    return [Rule("/ledger.v1.EnrolmentService/Enrol", without_certificate=True)]


_signer_required: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "policy_ledger_signer_required", default=None
)


def signer_principal_required(caller: Caller, grant: Grant) -> str | None:
    """The signer principal every event of this call must have (None: no limit)."""
    if grant.limit is not Limit.SIGNER:
        return None
    return OPERATOR_ID if caller.role == "operator" else caller.name


def set_signer_required(principal: str | None) -> None:
    """Remember, for this call, which signer its events must have (the interceptor does)."""
    _signer_required.set(principal)


def check_signer(signer_principal: str) -> None:
    """Raise PERMISSION_DENIED unless the call under way may submit events signed by
    ``signer_principal`` (the DSSE-verified signer: Event.insurer_id after verification).

    Calls outside a limited RPC (the payments' own recorder, tests on the appender) pass.
    """
    required = _signer_required.get()
    if required is not None and signer_principal != required:
        raise PermissionDenied(
            f"this caller may submit events signed by {required!r} only, not by "
            f"{signer_principal!r}",
            reason="SIGNER_NOT_CALLER",
            metadata={"signer": signer_principal, "caller_may_sign_as": required},
        )


def render_markdown(table: AuthorizationTable) -> str:
    """The table as the Markdown docs/security.md shows (a test keeps the doc equal to it)."""
    lines = ["| method | who may call it |", "|---|---|"]
    for rule in table:
        who = [grant.describe() for grant in rule.grants]
        if rule.any_authenticated:
            who.append("any authenticated caller")
        if rule.without_certificate:
            who.append(
                "anyone with a one-time enrolment code, without a certificate, on the "
                "enrolment port only (`serve --enrol-listen`)"
            )
        lines.append(f"| `{rule.method}` | {', '.join(who) or 'nobody'} |")
    open_methods = ", ".join(f"`{prefix}*`" for prefix in OPEN_METHOD_PREFIXES)
    lines.append(f"| {open_methods} | anyone, with or without a certificate |")
    return "\n".join(lines) + "\n"
