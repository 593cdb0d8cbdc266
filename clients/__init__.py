"""Typed Python clients of policy-ledger (insurer, auditor) and the offline verifier.

Nothing here imports the server's code (``ledger.storage``, ``ledger.rpc``, ``ledger.service``):
the clients use only the wire contract (``ledger.v1``) and the pure core (Merkle verification,
signed notes, DSSE), so an auditor can verify the log without trusting the server.
"""
