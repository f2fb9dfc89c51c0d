"""Finding objects in the PKCS#11 token: private keys (cached by alias), public keys, certificates.

Every method here runs inside :meth:`~signpeer_pkcs11token.session.Pkcs11Session._run` (the module
lock held, the session open).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key

from signpeer_core.api import (
    CryptoTokenOfflineError,
    KeyNotFoundError,
    PublicKey,
    SignpeerError,
)
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.session import HANDLE_ERRORS, Pkcs11Session

log = logging.getLogger("signpeer.pkcs11token")


class Pkcs11Lookups(Pkcs11Session):
    """Object look-ups (a base of ``Pkcs11CryptoToken``)."""

    # -- object lookups (inside _run) ------------------------------------------------------
    @staticmethod
    def _search(session: Any, template: dict[Attribute, Any]) -> list[Any]:
        # list() runs the search to the end so C_FindObjectsFinal happens now, under the lock.
        # python-pkcs11 reads attributes of each object it finds; another process may delete
        # an object in between, which surfaces as a stale handle: search again. SoftHSM2's file
        # store also fails a search now and then (FunctionFailed/GeneralError) while another
        # process writes the token: a search changes nothing, so it is safe to repeat.
        for attempt in range(3):
            try:
                return list(session.get_objects(template))
            except HANDLE_ERRORS + (p11e.FunctionFailed, p11e.GeneralError):
                if attempt == 2:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @classmethod
    def _find(cls, session: Any, object_class: ObjectClass, alias: str) -> list[Any]:
        return cls._search(session, {Attribute.CLASS: object_class, Attribute.LABEL: alias})

    def _private_object(self, session: Any, alias: str) -> Any:
        obj = self._objects.get(alias)
        if obj is not None:
            return obj
        found = self._find(session, ObjectClass.PRIVATE_KEY, alias)
        if not found:
            self._check_logged_in(session)
            raise KeyNotFoundError(self._no_key(alias))
        if len(found) > 1:
            log.warning("worker %s: %d private keys are labelled '%s'; using the first", self.config.name,
                        len(found), alias)
        if self.cache_keys:
            self._objects[alias] = found[0]
        return found[0]

    def _check_logged_in(self, session: Any) -> None:
        """Private objects are invisible without a login, and SoftHSM2 reports a lost login as
        an invalid key handle: tell "no such key" apart from "logged out" before saying the first."""
        module = self._module
        assert module is not None
        info = module.raw.session_info(session.handle)
        if info is None:
            raise p11e.SessionHandleInvalid()
        if info[1] not in (p11mod.CKS_RO_USER_FUNCTIONS, p11mod.CKS_RW_USER_FUNCTIONS):
            raise p11e.UserNotLoggedIn()

    def _no_key(self, alias: str) -> str:
        return (f"no key '{alias}' in the {self._where}; generate it with "
                f"signpeer generatekey {self.config.name} -keyalg EC -keyspec secp256r1 -alias {alias}")

    def _public_of(self, session: Any, alias: str) -> PublicKey:
        pubs = self._find(session, ObjectClass.PUBLIC_KEY, alias)
        if pubs:
            return _public_from_object(pubs[0], alias)
        # Keys made elsewhere may keep the public half only in a certificate, or not at all.
        for cert in self._certificates(session, alias):
            return cert.public_key()  # type: ignore[return-value]  # the certificate of a token key
        priv = self._private_object(session, alias)
        if priv.key_type == KeyType.RSA:
            return rsa.RSAPublicNumbers(int.from_bytes(priv[Attribute.PUBLIC_EXPONENT], "big"),
                                        int.from_bytes(priv[Attribute.MODULUS], "big")).public_key()
        raise KeyNotFoundError(f"key '{alias}' has no public key object or certificate in the token; "
                               f"import its certificate with signpeer importcertificatechain")

    def _certificates(self, session: Any, alias: str) -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(o[Attribute.VALUE])
                for o in self._find(session, ObjectClass.CERTIFICATE, alias)]


class UnreadablePublicKeyError(CryptoTokenOfflineError):
    """The token answered with a public key object whose attributes do not parse."""



def _public_from_object(obj: Any, alias: str) -> PublicKey:
    """A ``cryptography`` public key from a PKCS#11 public key object.

    Attributes that do not parse (e.g. read back empty while another process rewrites a SoftHSM2
    file store) raise :class:`UnreadablePublicKeyError`, never a bare ``ValueError``."""
    try:
        return _parse_public_object(obj)
    except (ValueError, TypeError) as exc:
        raise UnreadablePublicKeyError(
            f"the PKCS#11 token returned an unreadable public key for '{alias}' ({exc})") from exc


def _parse_public_object(obj: Any) -> PublicKey:
    key_type = obj.key_type
    if key_type == KeyType.RSA:
        return rsa.RSAPublicNumbers(int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big"),
                                    int.from_bytes(obj[Attribute.MODULUS], "big")).public_key()
    if key_type == KeyType.EC:
        return serialization.load_der_public_key(encode_ec_public_key(obj))  # type: ignore[return-value]  # an EC point
    if key_type == KeyType.EC_EDWARDS:
        point = obj[Attribute.EC_POINT]
        raw = point if len(point) == 32 else bytes(core.OctetString.load(point))
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise SignpeerError(f"unsupported key type {key_type!r} in the token")
