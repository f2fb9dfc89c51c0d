"""Time-stamp serial numbers that never repeat, across the processes and nodes of a cluster.

RFC 3161 §2.4.2: the serial number must be unique for each token of a TSA. SignServer draws
``MAXSERIALNUMBERLENGTH`` random bytes (default 8, 63 usable bits): two tokens then collide
with probability about n²/2⁶⁴ after n tokens (1 in 37 after a billion). Here a serial is built
so that a repeat needs more than bad luck:

``[node bits] [41 bits: milliseconds since 2024-01-01] [22 bits: process id XOR node hash]``

* In one process the millisecond field strictly increases (a token in the same millisecond as
  the last takes the next one), so a process never repeats itself.
* On one node, two live processes have different ids (Linux ids are below 2²², ``pid_max``),
  so their 22-bit fields differ (XOR with the node's hash is a bijection).
* Nodes differ by a SHA-256 hash of their ``node_id``: its low 22 bits are mixed into the
  process field and, when ``MAXSERIALNUMBERLENGTH`` leaves room above the 63 bits (9 bytes or
  more), its next bits fill the top. With the default 8 bytes two processes on different nodes
  share a serial space with probability 2⁻²² per pair; at 12 bytes or more, 2⁻⁵⁴: give cluster
  TSAs ``MAXSERIALNUMBERLENGTH=16``.

A process that signs more than 1000 time-stamps per second borrows milliseconds ahead of the
clock; the serial is not the time (``genTime`` is), and the borrowing only matters if the same
process id is reused on the node before the clock catches up.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

EPOCH_MS = 1_704_067_200_000  #: 2024-01-01T00:00:00Z
TIME_BITS = 41  #: milliseconds until 2093
PROCESS_BITS = 22
_PROCESS_MASK = (1 << PROCESS_BITS) - 1
_TIME_MASK = (1 << TIME_BITS) - 1
MIN_LENGTH, MAX_LENGTH = 8, 20  #: bytes, as SignServer's MAXSERIALNUMBERLENGTH


class SerialNumbers:
    """The serial numbers of one process (thread-safe); one per node id."""

    def __init__(self, node_id: str) -> None:
        self._node = int.from_bytes(hashlib.sha256(node_id.encode()).digest(), "big")
        self._last = 0
        self._lock = threading.Lock()

    def next(self, length: int = MIN_LENGTH) -> int:
        """A new positive serial that fits in ``length`` bytes (8..20)."""
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise ValueError(f"serial number length must be {MIN_LENGTH}..{MAX_LENGTH} bytes, not {length}")
        now = int(time.time() * 1000) - EPOCH_MS
        with self._lock:
            stamp = now if now > self._last else self._last + 1
            self._last = stamp
        process = (os.getpid() ^ self._node) & _PROCESS_MASK
        serial = ((stamp & _TIME_MASK) << PROCESS_BITS) | process
        top_bits = 8 * length - 1 - TIME_BITS - PROCESS_BITS
        if top_bits > 0:
            serial |= ((self._node >> PROCESS_BITS) & ((1 << top_bits) - 1)) << (TIME_BITS + PROCESS_BITS)
        return serial


_instances: dict[str, SerialNumbers] = {}
_instances_lock = threading.Lock()


def serial_numbers(node_id: str) -> SerialNumbers:
    """The process's generator for ``node_id`` (shared by every TimeStampSigner of the process)."""
    with _instances_lock:
        gen = _instances.get(node_id)
        if gen is None:
            gen = _instances[node_id] = SerialNumbers(node_id)
        return gen
