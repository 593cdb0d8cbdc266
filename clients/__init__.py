"""Typed Python clients of policy-ledger (insurer, auditor) and the offline verifier.

The clients and the verifier import none of the server's code (``ledger.storage``,
``ledger.rpc``, ``ledger.service``): they use only the wire contract (``ledger.v1``) and the pure
core (Merkle verification, signed notes, DSSE), so an auditor can verify the log without
trusting the server. Three command-line helpers here do use it: ``audit verify --replay``
(:mod:`clients.audit_cli`) re-runs the rules over a copy of the database with the server's own
code, by design, and the demos (:mod:`clients.demo`, :mod:`clients.demo_morocco`) name the
database their server starts on.

``make lint`` checks both (import-linter, ``[tool.importlinter]`` in pyproject.toml):
``clients-without-server`` lets no other module here reach ``ledger.storage``, ``ledger.rpc``,
``ledger.service``, ``ledger.sequencer``, ``ledger.handoff``, ``ledger.witnessing``,
``ledger.config`` or ``sqlalchemy``, directly or through another module, and names the three
helpers' imports one by one; ``offline-verifier`` keeps :mod:`clients.offline` free of
``ledger`` altogether (docs/design.md, "Layers").
"""
