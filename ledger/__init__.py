"""policy-ledger: a signed, append-only, verifiable ledger of health-insurance policy events.

The pure core (``ledger.merkle``, ``ledger.note``, ``ledger.checkpoint``, ``ledger.dsse``,
``ledger.signing``, ``ledger.events``, ``ledger.entry``, ``ledger.errors``, ``ledger.limits``)
imports neither grpc nor SQLAlchemy. The policy rules and projections live in
``ledger.coverage``, storage in ``ledger.storage``, the gRPC layer in ``ledger.rpc``. The
auditor's offline verifier (``clients/offline``) deliberately imports none of this package.
Packages that extend the server or the CLI (``payments``) plug in through entry points
(``policy_ledger.server_extensions``, ``policy_ledger.cli_commands``); this package never
imports them, nor ``clients``, nor the command line (``policy_ledger``, the composition root
above all three).
"""
