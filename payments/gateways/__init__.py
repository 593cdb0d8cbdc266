"""Payment gateway adapters: simulated, KNET-style hosted page, direct capture (mada-like)."""
