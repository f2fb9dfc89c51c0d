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

Its timing of the key (for the inline decision) costs a comparison per signature: a signature
under the limit keeps the estimate (already under it) and ends any run of slow ones; a slow one
goes into :class:`.keys.SignTiming`'s window, so 32 slow signatures in a row make the key slow
and the next requests take the general path (a thread), as a window of 32 slow ones always did.

Supported: ECDSA with a SHA-1/SHA-2 hash (``CKM_ECDSA`` on the host's digest) and Ed25519
(``CKM_EDDSA``). RSA (about 0.8 ms in SoftHSM2, never inline) and ``NONEwith*`` (the data is a
digest whose size is checked) always take the general path.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Protocol

from pkcs11 import Mechanism, PKCS11Error

from signpeer_core.api import PreparedSignature, PreparedSigner, SignatureAlgorithm
from signpeer_pkcs11token.keys import HASH_FUNCTIONS, TokenKey, der_parts, ecdsa_der


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
        return _ecdsa_signer(token, lock, objects, wrappers, alias, hash_function, inline_limit)
    if algorithm.kind == "Ed25519":
        return _eddsa_signer(token, lock, objects, wrappers, alias, inline_limit)
    return None


def _ecdsa_signer(token: TokenState, lock: Any, objects: dict[str, Any], wrappers: dict[str, TokenKey], alias: str,
                  hash_function: Any, limit: float) -> PreparedSigner:
    """ECDSA: the host's digest is signed (``CKM_ECDSA``), r‖s re-encoded as DER."""
    acquire, release, perf_counter = lock.acquire, lock.release, time.perf_counter
    mechanism, error = Mechanism.ECDSA, struct.error
    # DER of r‖s for the size of the key's last signature (P-256 until one says otherwise):
    # :func:`ecdsa_der`'s usual case written out, with the headers found by r's and s's first
    # bytes (:func:`der_parts`); another size, or a half with a leading zero byte, calls it.
    parts = der_parts(64)
    assert parts is not None
    split, table = parts

    def sign(data: bytes) -> PreparedSignature | None:
        nonlocal split, table
        try:
            timing = wrappers[alias].timing
        except KeyError:  # not cached (a subscript: cheaper than get() when it is)
            return None
        estimate = timing.estimate
        if estimate is None or estimate >= limit:
            return None
        payload = hash_function(data).digest()  # outside the lock
        if not acquire(False):
            return None
        try:
            key = objects[alias]
            if token._lost is not None or token._pin is None:
                return None
            started = perf_counter()
            signature: bytes = key.sign(payload, mechanism=mechanism)
            seconds = perf_counter() - started
        except (KeyError, PKCS11Error):  # not cached, or any device error: the general path
            return None
        finally:
            release()
        if seconds < limit:  # fast, as the estimate says: a run of slow ones is over
            if timing.samples:
                timing.samples.clear()
        else:
            timing.add(seconds)  # 32 slow in a row make the key slow
        try:
            r, s = split(signature)
        except error:  # a key of another size under this alias: its size from now on
            parts = der_parts(len(signature))
            if parts is not None:
                split, table = parts
            return ecdsa_der(signature), seconds
        heads = table[r[0]][s[0]]
        if heads is None:
            return ecdsa_der(signature), seconds
        head, middle = heads
        return b"".join((head, r, middle, s)), seconds

    return sign


def _eddsa_signer(token: TokenState, lock: Any, objects: dict[str, Any], wrappers: dict[str, TokenKey], alias: str,
                  limit: float) -> PreparedSigner:
    """EdDSA: the data itself is signed (``CKM_EDDSA``), the signature returned as the device gives it."""
    acquire, release, perf_counter = lock.acquire, lock.release, time.perf_counter
    mechanism = Mechanism.EDDSA

    def sign(data: bytes) -> PreparedSignature | None:
        wrapper = wrappers.get(alias)
        # python-pkcs11 signs bytes in one call and reads anything else as an iterable of chunks.
        if wrapper is None or type(data) is not bytes:
            return None
        timing = wrapper.timing
        estimate = timing.estimate
        if estimate is None or estimate >= limit:
            return None
        if not acquire(False):
            return None
        try:
            key = objects.get(alias)
            if key is None or token._lost is not None or token._pin is None:
                return None
            started = perf_counter()
            signature: bytes = key.sign(data, mechanism=mechanism)
            seconds = perf_counter() - started
        except PKCS11Error:
            return None
        finally:
            release()
        if seconds < limit:
            if timing.samples:
                timing.samples.clear()
        else:
            timing.add(seconds)
        return signature, seconds

    return sign
