"""``Pkcs11CryptoToken``: keys in a PKCS#11 HSM, configured as SignServer's PKCS11CryptoToken.

One instance per crypto worker and process. It keeps one read/write session (opened at
activation, reused for every operation) and, with ``CACHE_PRIVATEKEY`` (the default), the
object handles and public keys of the keys it has used, by alias.

Every call into the module holds the module's process-wide lock (:mod:`.module` explains
why: python-pkcs11 + SoftHSM2 crash when two threads are inside the module at once). Scale
HSM throughput with server processes, each of which initializes the module itself.

Keys are token objects with ``CKA_LABEL`` = ``CKA_ID`` = the alias (UTF-8). Certificates
stored with ``importcertificatechain`` are ``CKO_CERTIFICATE`` objects with the same label;
the leaf also carries the alias as ``CKA_ID``. New keys get no placeholder certificate in the
token (unlike SignServer, whose Java key store needs one): the public key object is enough to
find and describe a key, and a token object costs ~20 ms to write in SoftHSM2.
:meth:`~Pkcs11CryptoToken.generate_session_key` / :meth:`~Pkcs11CryptoToken.destroy_session_key`
make and delete short-lived keys (session objects by default) for one-time keys.

Failures never escape as anything but :class:`SignpeerError`: a missing module, an unknown
slot or label, a wrong PIN leave the token inactive with :meth:`offline_reasons` saying what
to fix. A lost session or login is reopened and the operation retried once; if the token is
gone, the token reports itself offline and tries to reconnect every few seconds. Status reads
(:attr:`is_active`, :meth:`offline_reasons`) answer from what the token knows and never call
into the module: a due reconnection or session probe runs in a thread.
The class is assembled from one base per concern, each in its own module and all following one
locking and recovery discipline around a library that is not thread-safe: ``session.py``
(configuration, the session, ``_run``), ``lifecycle.py`` (activation and status), ``lookup.py``
(finding keys and certificates), ``keygen.py`` (making and removing keys). This module adds signing
and certificates. The parts that stand alone live beside them (``module.py``: loading and the lock;
``keys.py``: key objects that sign in the token; ``prepared.py``: the hot path; ``attributes.py``:
key templates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pkcs11
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, CertificateType, ObjectClass
from pkcs11 import exceptions as p11e

from signpeer_core.api import (
    BadRequestError,
    ConflictError,
    KeyHandle,
    KeyNotFoundError,
    PreparedSigner,
    PrivateKey,
    PropertyDoc,
    RequestInfo,
    SignatureAlgorithm,
    order_chain,
    public_key_der,
    run_in_thread,
)
from signpeer_pkcs11token.keygen import Pkcs11KeyGeneration
from signpeer_pkcs11token.keys import TokenKey, wrap_key
from signpeer_pkcs11token.lifecycle import Pkcs11LifeCycle
from signpeer_pkcs11token.prepared import prepare_signer
from signpeer_pkcs11token.session import HANDLE_ERRORS, RECONNECT_ERRORS, TRANSIENT_ERRORS

log = logging.getLogger("signpeer.pkcs11token")
T = TypeVar("T")

#: Signatures faster than this (moving average) run inline when the module is idle; slower
#: ones (RSA in SoftHSM2 takes ~0.8 ms, network HSMs more) always go to a worker thread so
#: they never hold up the event loop.
INLINE_LIMIT = 0.00025


class Pkcs11CryptoToken(Pkcs11KeyGeneration, Pkcs11LifeCycle):
    """Keys in a PKCS#11 token; signing forwards to the device."""

    type_name = "Pkcs11CryptoToken"
    implementation_aliases = ("org.signserver.server.cryptotokens.PKCS11CryptoToken", "PKCS11CryptoToken")
    blocking = True
    properties = (
        PropertyDoc("SHAREDLIBRARY", "— (required)", "path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so"),
        PropertyDoc("SHAREDLIBRARYNAME", "—", "SignServer's library name: not resolved by signpeer; without SHAREDLIBRARY "
                    "the error names it"),
        PropertyDoc("SLOTLABELTYPE", "TOKEN_LABEL", "how SLOTLABELVALUE names the token: TOKEN_LABEL, SLOT_NUMBER or SLOT_INDEX"),
        PropertyDoc("SLOTLABELVALUE", "— (required)", "the token label, slot id, or index in the module's slot list"),
        PropertyDoc("PIN", "—", "user PIN for auto-activation; without it run signpeer activatecryptotoken", secret=True),
        PropertyDoc("CACHE_PRIVATEKEY", "true", "keep key handles and public keys by alias instead of searching per use"),
        PropertyDoc("ATTRIBUTES", "—", "SunPKCS11-style key generation attributes (attributes(generate, CKO_PRIVATE_KEY, *) = {...})"),
        PropertyDoc("KEYGENERATIONATTRIBUTES", "—", "simple key generation attributes: PRIVATE.CKA_X=value; PUBLIC.CKA_Y=value"),
        PropertyDoc("SLOT", "—", "legacy SignServer property: same as SLOTLABELTYPE=SLOT_NUMBER with this value"),
        PropertyDoc("SLOTLISTINDEX", "—", "legacy SignServer property: same as SLOTLABELTYPE=SLOT_INDEX with this value"),
    )

    # -- keys ------------------------------------------------------------------------------
    def sign_with_key(self, alias: str, mechanism: pkcs11.Mechanism, data: bytes, param: Any = None) -> bytes:
        """One signature with the key ``alias`` (called by the wrapper keys in :mod:`.keys`)."""
        # Fast path for the hot loop: a cached handle on a healthy session. Any failure falls
        # through to _run, which reconnects, looks the key up again and retries.
        module, key = self._module, self._objects.get(alias)
        if key is not None and module is not None and self._lost is None and self._pin is not None:
            with module.lock:
                if alias in self._objects and self._objects[alias] is key:
                    try:
                        return key.sign(data, mechanism=mechanism, mechanism_param=param)
                    except RECONNECT_ERRORS + HANDLE_ERRORS + TRANSIENT_ERRORS:
                        pass

        def op(session: Any) -> bytes:
            key = self._private_object(session, alias)
            try:
                return key.sign(data, mechanism=mechanism, mechanism_param=param)
            except HANDLE_ERRORS as exc:
                self._objects.pop(alias, None)
                self._wrappers.pop(alias, None)
                try:
                    key = self._private_object(session, alias)
                except KeyNotFoundError:
                    # Seen with SoftHSM2 while another process used the token: the handle
                    # went stale and the search briefly came back empty. A fresh session
                    # (via _run's single retry) tells a transient from a removed key.
                    raise p11e.SessionHandleInvalid() from exc
                return key.sign(data, mechanism=mechanism, mechanism_param=param)
            except TRANSIENT_ERRORS as exc:
                log.warning("worker %s: %s signing with key '%s'; retrying once", self.config.name,
                            type(exc).__name__, alias)
                self._objects.pop(alias, None)
                try:
                    key = self._private_object(session, alias)
                except KeyNotFoundError:
                    # The same SoftHSM2 two-writer moment as above (seen with a key this process
                    # had just made): let _run's fresh session tell it from a removed key.
                    raise p11e.SessionHandleInvalid() from exc
                return key.sign(data, mechanism=mechanism, mechanism_param=param)

        return self._run("signing", op)

    def key_aliases(self) -> list[str]:
        def op(session: Any) -> list[str]:
            labels = set()
            for obj in self._search(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                try:
                    labels.add(obj.label)
                except HANDLE_ERRORS + (AttributeError,):
                    # Removed by another process since the search (python-pkcs11 then returns a
                    # bare Object whose class could not be read, without a label).
                    pass
            return sorted(label for label in labels if label)

        return self._run("listing keys", op)

    def private_key(self, alias: str) -> PrivateKey:
        wrapper = self._wrappers.get(alias)
        if wrapper is not None:
            return wrapper

        def op(session: Any) -> PrivateKey:
            self._private_object(session, alias)
            key = wrap_key(self, alias, self._public_of(session, alias))
            if self.cache_keys:
                self._wrappers[alias] = key
            return key

        return self._run(f"looking up key '{alias}'", op)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Sign inline when the device is idle and the key fast, else in a worker thread.

        A thread hop costs 80-110 µs here, more than an ECDSA signature in SoftHSM2 (~60 µs),
        and GIL hand-offs made many concurrent hops slower still. So when the key's recent
        signatures took under :data:`INLINE_LIMIT` (see :class:`.keys.SignTiming`) and no
        other thread is using the module (the lock is taken without waiting and held for the
        call), the call runs on the caller's thread. Slow keys (RSA in SoftHSM2 ~0.8 ms,
        network HSMs more) and a busy module go to a worker thread, so the event loop is never
        held up for long.
        """
        module = self._module
        key = None
        for arg in args:  # the signer passes (request, handle, algorithm)
            if isinstance(arg, KeyHandle):
                key = arg.private_key
                break
        if (module is not None and isinstance(key, TokenKey) and key.timing.fast(INLINE_LIMIT)
                and module.lock.acquire(blocking=False)):
            try:
                return fn(*args)
            finally:
                module.lock.release()
        return await run_in_thread(fn, *args)

    def prepared_signer(self, alias: str, algorithm: SignatureAlgorithm) -> PreparedSigner | None:
        """``PlainSigner``'s inline hot path (:mod:`.prepared`): bound to this token's module lock
        and key caches, so it follows deactivation, reconnection and key removal by itself.
        None without CACHE_PRIVATEKEY (every use searches the token) or a loaded module."""
        module = self._module
        if module is None or not self.cache_keys:
            return None
        return prepare_signer(self, module.lock, self._objects, self._wrappers, alias, algorithm, INLINE_LIMIT)

    async def acquire(self, alias: str, chain: list[x509.Certificate], request: RequestInfo) -> KeyHandle:
        key = self._wrappers.get(alias)
        if key is None:  # a search in the token: not on the event loop
            key = await run_in_thread(self.private_key, alias)
        return KeyHandle(alias=alias, private_key=key, chain=chain)

    # -- certificates ----------------------------------------------------------------------
    def certificate_chain(self, alias: str) -> list[x509.Certificate]:
        if not self.is_active:
            return []

        def op(session: Any) -> list[x509.Certificate]:
            return order_chain(self._certificates(session, alias))

        return self._run(f"reading the certificates of '{alias}'", op)

    def import_certificate_chain(self, alias: str, chain: list[x509.Certificate]) -> None:
        if not chain:
            raise BadRequestError("the certificate chain is empty")
        public = self.private_key(alias).public_key()
        if public_key_der(chain[0]) != public_key_der(public):
            raise ConflictError(f"the first certificate of the chain is not for key '{alias}' "
                                f"(its public key differs); put the signer certificate first")
        key_id = alias.encode("utf-8")

        def op(session: Any) -> None:
            for obj in self._find(session, ObjectClass.CERTIFICATE, alias):
                obj.destroy()
            for i, cert in enumerate(chain):
                attrs = {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: alias,
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.ISSUER: cert.issuer.public_bytes(),
                    Attribute.SERIAL_NUMBER: core.Integer(cert.serial_number).dump(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
                if i == 0:
                    attrs[Attribute.ID] = key_id  # links the leaf to the key pair
                session.create_object(attrs)

        self._run(f"storing the certificates of '{alias}'", op)
