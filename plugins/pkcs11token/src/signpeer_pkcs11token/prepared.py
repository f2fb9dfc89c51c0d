"""Prepared signers: ``PlainSigner``'s hot path with a key in the PKCS#11 token.

:meth:`Pkcs11CryptoToken.prepared_signer` (the core's ``CryptoToken.prepared_signer``) returns
the function built here. Everything that does not change between requests is bound once: the
hash, the mechanism, the DER encoding, the module lock and the token's handle caches. One call
then does what a signature needs and nothing else: hash on the host, take the module lock
without waiting, sign with the cached object handle on the token's session, re-encode r‖s as
DER. About 10 Python calls, where the general path (acquire, the inline-or-thread decision, the
wrapper key's hashing, ``sign_with_key``, release) made some 60.

It declines (returns None, and the signer takes the general path) whenever the general path
would do more than sign:

* the key's handle or wrapper is not cached (CACHE_PRIVATEKEY=false, not yet looked up, or
  dropped by a reopened session, a deactivation, ``removekey``, a stale handle);
* the token is deactivated or lost (its PIN forgotten, a reconnection pending);
* the key is slow or not yet timed (:class:`.keys.SignTiming`), or another thread holds the
  module lock (a renewal, a slow RSA signature): inline signing must not wait;
* the device reports any error: the general path retries, reconnects or looks the key up
  again, and reports what is wrong with the messages it always had.

So it never uses a handle the token has let go of: the handle is read from the token's cache
under the module lock, the same cache and lock every other operation keeps consistent.

Supported: ECDSA with a SHA-1/SHA-2 hash (``CKM_ECDSA`` on the host's digest) and Ed25519
(``CKM_EDDSA``). RSA (about 0.8 ms in SoftHSM2, never inline) and ``NONEwith*`` (the data is a
digest whose size is checked) always take the general path.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from pkcs11 import Mechanism, PKCS11Error

from signpeer_core.api import PreparedSignature, PreparedSigner, SignatureAlgorithm
from signpeer_pkcs11token.keys import DER_PARTS, HASH_FUNCTIONS, SignTiming, TokenKey, ecdsa_der


class TokenState(Protocol):
    """What a prepared signer reads of its token on every call."""

    _pin: str | None  # None: deactivated
    _lost: str | None  # not None: the session is gone and a reconnection is pending


def prepare_signer(token: TokenState, lock: Any, objects: dict[str, Any], wrappers: dict[str, Any], alias: str,
                   algorithm: SignatureAlgorithm, inline_limit: float) -> PreparedSigner | None:
    """The prepared signer of ``alias`` with ``algorithm``, or None when the algorithm has none.

    ``lock`` is the module's call lock, ``objects`` and ``wrappers`` the token's caches of
    private key objects and wrapper keys by alias (the dictionaries themselves: they are read
    on every call), ``inline_limit`` the seconds under which a signature may run inline."""
    if algorithm.prehashed:
        return None
    hash_algorithm = algorithm.hash_instance()
    if algorithm.kind == "EC" and hash_algorithm is not None:
        hash_function = HASH_FUNCTIONS.get(hash_algorithm.name)
        if hash_function is None:
            return None
        return _signer(token, lock, objects, wrappers, alias, Mechanism.ECDSA, hash_function, inline_limit)
    if algorithm.kind == "Ed25519":
        return _signer(token, lock, objects, wrappers, alias, Mechanism.EDDSA, None, inline_limit)
    return None


def _signer(token: TokenState, lock: Any, objects: dict[str, Any], wrappers: dict[str, TokenKey], alias: str,
            mechanism: Mechanism, hash_function: Any, limit: float) -> PreparedSigner:
    """ECDSA (``hash_function``: the digest is signed, r‖s re-encoded as DER) or EdDSA (None:
    the data itself is signed, the signature is returned as the device gives it)."""
    acquire, release, perf_counter = lock.acquire, lock.release, time.perf_counter
    window = SignTiming.WINDOW
    # DER of r‖s for the size of the key's last signature: :func:`ecdsa_der`'s usual case,
    # written out (no call, no look-up by size); any other size or case calls it.
    der_size, split, heads = 0, None, DER_PARTS[64][1]

    def sign(data: bytes) -> PreparedSignature | None:
        nonlocal der_size, split, heads
        wrapper = wrappers.get(alias)
        # python-pkcs11 signs bytes in one call and reads anything else as an iterable of chunks.
        if wrapper is None or (hash_function is None and type(data) is not bytes):
            return None
        timing = wrapper.timing
        estimate = timing.estimate
        if estimate is None or estimate >= limit:
            return None
        payload = hash_function(data).digest() if hash_function is not None else data  # outside the lock
        if not acquire(False):
            return None
        try:
            key = objects.get(alias)
            if key is None or token._lost is not None or token._pin is None:
                return None
            started = perf_counter()
            signature: bytes = key.sign(payload, mechanism=mechanism)
            seconds = perf_counter() - started
        except PKCS11Error:
            return None
        finally:
            release()
        samples = timing.samples  # timing.add(seconds), without the call (the estimate is set)
        samples.append(seconds)
        if len(samples) >= window:
            timing.close_window()
        if hash_function is None:
            return signature, seconds
        if len(signature) == der_size:
            r, s = split(signature)  # type: ignore[misc]
            r0 = r[0]
            s0 = s[0]
            if r0 and s0:
                head, middle = heads[(r0 >> 7) | ((s0 >> 7) << 1)]
                return b"".join((head, r, middle, s)), seconds
        elif len(signature) in DER_PARTS:
            der_size = len(signature)
            split, heads = DER_PARTS[der_size]
        return ecdsa_der(signature), seconds

    return sign
