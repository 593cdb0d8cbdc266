"""Local sandbox gateways speaking the real protocols over HTTP on 127.0.0.1 (tests, demos)."""
