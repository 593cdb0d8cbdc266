"""A C2SP tlog-witness: cosigns checkpoints of the logs it follows (https://c2sp.org/tlog-witness).

Independent of the log: imports nothing from the server's ``ledger`` package, only the offline
verifier's note library (``clients.offline``), the standard library and ``cryptography``.
"""
