"""Insurance cards, registration certificates and the status of signed documents (docs/cards.md)."""
