"""Typed Python clients of policy-ledger (insurer, auditor) and the offline verifier.

The clients and the verifier import none of the server's code (``ledger.storage``,
``ledger.rpc``, ``ledger.service``): they use only the wire contract (``ledger.v1``) and the pure
core (Merkle verification, signed notes, DSSE), so an auditor can verify the log without
trusting the server (``make lint`` checks the offline verifier, :mod:`clients.offline`). Three
command-line helpers here do use it: ``audit verify --replay`` (:mod:`clients.audit_cli`)
re-runs the rules over a copy of the database with the server's own code, by design, and the
demos (:mod:`clients.demo`, :mod:`clients.demo_morocco`) name the database their server starts
on.
"""
