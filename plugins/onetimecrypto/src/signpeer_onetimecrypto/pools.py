"""The key pools of this process (``KEYPOOL_SIZE``), one per one-time worker, kept across reloads
while the worker's token and key settings stay the same (a reload must not throw away keys
generated ahead, nor leave a second pool filling beside the first)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from signpeer_onetimecrypto.keysource import KeyPool
from signpeer_onetimecrypto.metrics import pool_keys, pool_size

if TYPE_CHECKING:
    from signpeer_onetimecrypto.keysource import KeySource
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

__all__ = ["close_pools", "existing_pool", "pool_for"]

#: Pools survive reloads when nothing they depend on changed: (services, worker id) -> (key, pool).
_POOLS: dict[tuple[int, int], tuple[tuple[Any, ...], KeyPool]] = {}
_POOLS_LOCK = threading.Lock()


def _pool_key(worker: OneTimeCryptoWorker, source: KeySource, size: int) -> tuple[Any, ...]:
    return (id(source.token), worker.keyalg, worker.keyspec, worker.prefix, type(source), size)


def existing_pool(worker: OneTimeCryptoWorker, source: KeySource, size: int) -> KeyPool | None:
    """The running pool of this worker if its settings did not change; a stale one is closed."""
    slot = (id(worker.services), worker.id)
    with _POOLS_LOCK:
        current = _POOLS.get(slot)
        if current is None:
            return None
        if current[0] == _pool_key(worker, source, size):
            current[1].source = source
            return current[1]
        current[1].close()
        del _POOLS[slot]
        return None


def pool_for(worker: OneTimeCryptoWorker, source: KeySource, size: int) -> KeyPool | None:
    """The worker's pool, kept across reloads while the token and key settings stay the same."""
    slot = (id(worker.services), worker.id)
    wanted = _pool_key(worker, source, size)
    with _POOLS_LOCK:
        current = _POOLS.get(slot)
        if current is not None and current[0] == wanted:
            current[1].source = source
            return current[1]
        if current is not None:
            current[1].close()
            del _POOLS[slot]
        if size <= 0:
            return None
        pool = KeyPool(source, size)
        pool.fill_gauge = pool_keys.labels(worker.name)
        pool_size.labels(worker.name).set(size)
        _POOLS[slot] = (wanted, pool)
        return pool


def close_pools() -> None:
    """Stop every pool of this process and delete its keys (tests, shutdown)."""
    with _POOLS_LOCK:
        for _, pool in _POOLS.values():
            pool.close()
        _POOLS.clear()
