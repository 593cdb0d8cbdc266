"""Routed reads: the ``x-min-tree-size`` metadata, and running a read on the standby or primary.

A reader that holds a receipt names its checkpoint's size in the ``x-min-tree-size`` call
metadata (``limits.min_tree_size_metadata``); the server never answers it from a smaller tree
(``ledger.storage.read_routing``). The value is a decimal number; anything else is
INVALID_ARGUMENT (reason ``MIN_TREE_SIZE_INVALID``), whether or not a standby is configured.
"""

from __future__ import annotations

import grpc

from ledger import limits
from ledger.errors import InvalidArgument

__all__ = ["min_tree_size_of"]

_SIZE_MAX = 2**63 - 1


def min_tree_size_of(context: grpc.aio.ServicerContext[object, object]) -> int:
    """The call's ``x-min-tree-size`` (0 when absent); INVALID_ARGUMENT when unreadable or
    given more than once."""
    values = [
        value
        for key, value in (context.invocation_metadata() or ())
        if key.lower() == limits.min_tree_size_metadata
    ]
    if not values:
        return 0
    text = values[0] if isinstance(values[0], str) else ""
    if len(values) > 1 or not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise InvalidArgument(
            f"{limits.min_tree_size_metadata} must be one decimal tree size (a receipt's "
            "checkpoint size)",
            reason="MIN_TREE_SIZE_INVALID",
        )
    size = int(text)
    if size > _SIZE_MAX:
        raise InvalidArgument(
            f"{limits.min_tree_size_metadata} is beyond any tree size",
            reason="MIN_TREE_SIZE_INVALID",
        )
    return size
