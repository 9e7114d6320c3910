"""A consistent-hash ring with bounded loads, the same on every gateway.

Each replica stands on the ring at ``vnodes`` points, each the first 8 bytes of
the SHA-256 of ``"<replica id>#<i>"``: a pure function of the replica's
(normalised) URL, with no randomness and no shared state, so every gateway
given the same URLs -- in any order -- builds the same ring and sends a key to
the same replica. A key goes to the first replica clockwise from its point;
taking a replica out (unhealthy) moves only the keys that were on it, each to
the next replica clockwise.

**Bounded loads** (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
Bounded Loads", 2018; HAProxy's ``hash-balance-factor``, Envoy's ring hash with
``hash_balance_factor``): no replica takes more than ``ceil(c * (m + 1) / n)``
of the ``m`` requests in flight plus the new one, ``n`` the replicas available.
A key whose replica is at that bound walks on to the next replica of the ring
that is below it, so a hot prefix spills over to a fixed sequence of replicas
(the same from every gateway) instead of piling onto one. Any ``c > 1``
guarantees such a replica exists; ``c`` near 1 balances tightly and moves
more keys, a large ``c`` keeps affinity longer.

**A floor under the bound** (``min_load``): at low load the formula alone would
cap every replica at one request (2 in flight over 3 replicas: ``ceil(1.25 * 2 /
3) = 1``), scattering a prefix's second concurrent question to a replica that
has none of its KV, although any engine runs several requests at once. No
replica counts as full below ``min_load`` requests in flight; the bound only
starts to bite when the fleet is busy, where balancing matters.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterator, Sequence

DEFAULT_VNODES = 160
DEFAULT_LOAD_FACTOR = 1.25


def ring_point(data: bytes) -> int:
    """A position on the ring: the first 8 bytes of SHA-256, big-endian."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class HashRing:
    """Replicas by id (``ids[i]`` is replica ``i``); :meth:`walk` and :meth:`choose`
    return indices."""

    def __init__(self, ids: Sequence[str], *, vnodes: int = DEFAULT_VNODES) -> None:
        if not ids:
            raise ValueError("a ring needs at least one replica")
        if len(set(ids)) != len(ids):
            raise ValueError(f"replica ids must be distinct, got {list(ids)!r}")
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes}")
        self.ids = tuple(ids)
        # Ties (two ids hashing to one point) break on the id, not on list order.
        points = sorted(
            (ring_point(f"{rid}#{i}".encode()), rid, index)
            for index, rid in enumerate(self.ids)
            for i in range(vnodes)
        )
        self._points = [point for point, _, _ in points]
        self._owners = [index for _, _, index in points]

    def __len__(self) -> int:
        return len(self.ids)

    def walk(self, key: int) -> Iterator[int]:
        """Every replica once, in ring order clockwise from ``key``'s point."""
        start = bisect.bisect_left(self._points, key)
        seen: set[int] = set()
        size = len(self._points)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == len(self.ids):
                    return

    def choose(
        self,
        key: int,
        *,
        loads: Sequence[int],
        available: Sequence[bool],
        load_factor: float = DEFAULT_LOAD_FACTOR,
        min_load: int = 1,
    ) -> list[int]:
        """The available replicas in the order a request with ``key`` tries them.

        The first is the first replica clockwise whose load (requests in
        flight, ``loads[i]``) is under the bound; the rest follow in ring order
        (the failover order). Empty when no replica is available.
        """
        order = [i for i in self.walk(key) if available[i]]
        if not order:
            return []
        capacity = bounded_capacity(
            sum(loads[i] for i in order), len(order), load_factor, min_load=min_load
        )
        first = next((i for i in order if loads[i] < capacity), order[0])
        at = order.index(first)
        return order[at:] + order[:at]


def bounded_capacity(
    in_flight: int, replicas: int, load_factor: float, *, min_load: int = 1
) -> int:
    """How many requests one replica may hold once the next one is placed:
    ``ceil(c * (in_flight + 1) / replicas)``, at least ``min_load`` (and 1)."""
    if not load_factor > 1.0:
        raise ValueError(f"the load factor must be > 1, got {load_factor!r}")
    # The rounding guard keeps 1.25 * 4 / 5 from ceiling to 2 through float error.
    bound = math.ceil(load_factor * (in_flight + 1) / replicas - 1e-9)
    return max(1, min_load, bound)


__all__ = ["DEFAULT_LOAD_FACTOR", "DEFAULT_VNODES", "HashRing", "bounded_capacity", "ring_point"]
