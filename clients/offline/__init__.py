"""The offline verifier: imports nothing from the server's ledger package."""
