"""policy-ledger: a signed, append-only, verifiable ledger of health-insurance policy events.

The pure core (``ledger.merkle``, ``ledger.note``, ``ledger.checkpoint``, ``ledger.dsse``,
``ledger.signing``, ``ledger.events``, ``ledger.entry``, ``ledger.errors``, ``ledger.limits``)
imports neither grpc nor SQLAlchemy, so the offline verifier in ``clients/`` can use it without
loading any server code. Storage lives in ``ledger.storage``, the gRPC layer in ``ledger.rpc``.
"""
