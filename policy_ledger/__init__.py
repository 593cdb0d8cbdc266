"""The ``policy-ledger`` command line: the composition root above ``ledger``, ``payments`` and
``clients`` (ARCHITECTURE.md §3 and §9).

The server's commands (``serve``, ``keygen``, ``db``, ``enrol``) call ``ledger``; the commands
that talk to a server use ``clients``; ``payments`` and more of ``clients`` add their command
groups through the entry-point group ``policy_ledger.cli_commands``. This package is the only
one that may import all three: ``ledger`` imports neither ``payments`` nor ``clients``, and
nothing imports this package (the import contracts in pyproject.toml, run by ``make lint``).
"""
