"""The identity vault's domain: person tokens and the people they stand for.

Signed events name people only by **person tokens** (:mod:`ledger.identity.tokens`), random
values the vault issues. The vault (storage in :mod:`ledger.storage.vault_store`) maps a token to
the person's identifier (type, country, value); erasing a person deletes that mapping, and the
log, which holds tokens only, keeps verifying. docs/privacy.md describes the whole design.
"""
