"""Internal wire formats between the processes of one server (not part of the public API)."""
