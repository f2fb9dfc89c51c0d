"""Wrong PINs are slowed down before an HSM locks the user PIN.

HSMs count failed logins per token and lock the user PIN after a few (often 3 to 10); a
successful login resets their count. This process keeps the same count per HSM token (library
and slot or label, shared by every worker using that token): after two wrong PINs in a row,
the next attempt is refused without reaching the HSM until a delay has passed (1 s, doubling
with each further wrong PIN, at most 5 minutes). A successful login resets it. The refusal is a
429 naming the wait, so a script retrying in a loop cannot burn the HSM's remaining tries.
"""

from __future__ import annotations

import threading
import time

from signpeer_core.api import CryptoTokenAuthenticationError

#: Wrong PINs in a row tried at once; after that the delays start.
FREE_ATTEMPTS = 2
FIRST_DELAY = 1.0
MAX_DELAY = 300.0


class PinThrottledError(CryptoTokenAuthenticationError):
    """An activation refused without trying the PIN: too many wrong PINs in a row."""

    status = 429


class PinThrottle:
    """Consecutive wrong PINs per HSM token, and when the next attempt may reach the HSM."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # token -> (wrong PINs in a row, next allowed)

    def check(self, token: str) -> None:
        """Raise :class:`PinThrottledError` while ``token`` must not be tried."""
        with self._lock:
            count, allowed = self._failures.get(token, (0, 0.0))
        wait = allowed - time.monotonic()
        if wait > 0:
            raise PinThrottledError(
                f"{count} wrong PINs in a row for the {token}: the next attempt is allowed in {wait:.0f} s "
                f"(slowed down so the HSM does not lock the user PIN); check the PIN before trying again")

    def failed(self, token: str) -> None:
        with self._lock:
            count = self._failures.get(token, (0, 0.0))[0] + 1
            delay = 0.0 if count < FREE_ATTEMPTS else min(FIRST_DELAY * 2 ** (count - FREE_ATTEMPTS), MAX_DELAY)
            self._failures[token] = (count, time.monotonic() + delay)

    def succeeded(self, token: str) -> None:
        with self._lock:
            self._failures.pop(token, None)


#: One per process: every worker using an HSM token shares its count.
THROTTLE = PinThrottle()
