"""The upper levels of the tree in memory, for proofs (issue 13 item 9).

A proof at a tree of n leaves reads about 2·log2(n) stored nodes; those near the root are the same
for nearly every proof, and without a cache each one is a row every proof reads again. The cache
keeps the top :data:`~ledger.limits.proof_cache_levels` levels (counted from the tree's size), so
the rows a proof reads from the database stay about as many as at a tree of 2**levels leaves,
however large the tree grows. It also keeps the low nodes on the right edge of a proof's tree
(those ending at its size): every proof at that size folds them into its last hashes.

It needs no invalidation, only a bound: it holds complete nodes only (a proof never reads any
other), and a complete subtree's hash never changes. ``tree_nodes`` is append-only (triggers
refuse UPDATE and DELETE), so a hash read once is right for every later proof, whichever process
appended it and however far the tree has grown since: several worker processes reading one
database while the sequencer appends each keep their own cache, and all agree. It is read only
from committed rows (:class:`~ledger.storage.log_store.LogStore` reads outside any write
transaction), so a node a rolled-back batch wrote is never kept.

One cache belongs to one database: :meth:`NodeCache.of` keeps one per engine. A standby's engine
has its own (its nodes are the primary's, but it may not have them yet).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence

from sqlalchemy import Engine

from ledger import limits
from ledger.storage.nodes import INDEX_BITS

__all__ = ["NodeCache"]

_INDEX_MASK = (1 << INDEX_BITS) - 1


class NodeCache:
    """Hashes of complete nodes near the root, by node key (``level << 56 | index``).

    Safe from many threads: lookups and inserts are single dict operations, and a trim swaps in
    a new dict (an insert racing it may be lost, which costs one more read later).
    """

    def __init__(
        self,
        levels: int = limits.proof_cache_levels,
        entries_max: int = limits.proof_cache_entries_max,
    ) -> None:
        """Keep nodes of the top ``levels`` levels of the tree, at most ``entries_max`` of them.

        Requires 0 <= levels and 0 < entries_max.
        """
        if levels < 0 or entries_max <= 0:
            raise ValueError(f"levels must be >= 0 and entries_max > 0: {levels}, {entries_max}")
        self._levels = levels
        self._entries_max = entries_max
        self._hashes: dict[int, bytes] = {}

    @classmethod
    def of(cls, engine: Engine) -> NodeCache:
        """The cache of ``engine``'s database, made on first use and dropped with the engine."""
        with _BY_ENGINE_LOCK:
            cache = _BY_ENGINE.get(engine)
            if cache is None:
                cache = _BY_ENGINE[engine] = cls()
            return cache

    def __len__(self) -> int:
        return len(self._hashes)

    def lowest_level(self, tree_size: int) -> int:
        """The lowest level kept for proofs at ``tree_size``: the top ``levels`` levels."""
        return max(0, tree_size.bit_length() - self._levels)

    def keep(self, tree_size: int, nodes: Iterable[tuple[int, bytes]]) -> None:
        """Keep those of ``nodes`` (key, hash), read for a proof at ``tree_size``, that lie in
        its top levels or end at its right edge. Every node must be complete and stored (read
        from ``tree_nodes``)."""
        lowest_key = self.lowest_level(tree_size) << INDEX_BITS
        hashes = self._hashes
        for key, digest in nodes:
            if key >= lowest_key or ((key & _INDEX_MASK) + 1) << (key >> INDEX_BITS) == tree_size:
                if len(hashes) >= self._entries_max:
                    hashes = self._trim(tree_size)
                hashes[key] = digest

    def _trim(self, tree_size: int) -> dict[int, bytes]:
        """Make room: drop nodes below the levels kept at ``tree_size`` (the tree grew past
        them, or they were the right edge of a smaller tree), or everything if that is not
        enough (the top levels alone take at most half of ``entries_max``)."""
        lowest_key = self.lowest_level(tree_size) << INDEX_BITS
        kept = {key: digest for key, digest in self._hashes.items() if key >= lowest_key}
        if len(kept) >= self._entries_max // 2:
            kept = {}
        self._hashes = kept
        return kept

    def split(self, keys: Sequence[int]) -> tuple[dict[int, bytes], list[int]]:
        """The kept hashes among ``keys``, and the keys still to read (sorted, no repeats)."""
        found: dict[int, bytes] = {}
        hashes = self._hashes
        for key in keys:
            digest = hashes.get(key)
            if digest is not None:
                found[key] = digest
        return found, sorted({key for key in keys if key not in found})


_BY_ENGINE: weakref.WeakKeyDictionary[Engine, NodeCache] = weakref.WeakKeyDictionary()
_BY_ENGINE_LOCK = threading.Lock()
