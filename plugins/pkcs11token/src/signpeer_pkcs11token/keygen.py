"""Making and deleting keys in the PKCS#11 token: kept keys (``generatekey``), one-time session
keys (signpeer-onetimecrypto's KEYSTORAGE=SESSION) and ``removekey``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from asn1crypto import core
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from signpeer_core.api import (
    BadRequestError,
    ConflictError,
    KeyNotFoundError,
    KeySpec,
    PrivateKey,
    PublicKey,
    parse_key_spec,
)
from signpeer_pkcs11token.keys import KeySigner, SignTiming, wrap_key
from signpeer_pkcs11token.lookup import Pkcs11Lookups, UnreadablePublicKeyError, _public_from_object
from signpeer_pkcs11token.session import HANDLE_ERRORS, RECONNECT_ERRORS, TRANSIENT_ERRORS

log = logging.getLogger("signpeer.pkcs11token")

# RFC 8410 id-Ed25519 as CKA_EC_PARAMS (PKCS#11 3.0 accepts it, SoftHSM2 2.6 does).
_ED25519_PARAMS = core.ObjectIdentifier("1.3.101.112").dump()


@dataclass(frozen=True)
class KeyPairTemplate:
    """What ``C_GenerateKeyPair`` gets for one key pair (:meth:`Pkcs11CryptoToken._keypair_template`)."""

    key_type: KeyType
    length: int | None
    public: dict[Attribute, Any]
    private: dict[Attribute, Any]
    token_object: bool


#: What a token-object key generation retries once (see ``_generate_keypair``).
KEYGEN_RETRY_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, *HANDLE_ERRORS, UnreadablePublicKeyError)


class Pkcs11KeyGeneration(Pkcs11Lookups):
    """Key generation and removal (a base of ``Pkcs11CryptoToken``)."""

    @property
    def _key_signer(self) -> KeySigner:
        """This token as the wrapper keys' signer (``Pkcs11CryptoToken.sign_with_key``)."""
        return cast("KeySigner", self)

    # -- kept keys -------------------------------------------------------------------------
    def _keypair_template(self, spec: KeySpec, token_object: bool = True) -> KeyPairTemplate:
        """Key type, length and the public/private templates of a new key pair (with ATTRIBUTES).

        Every key pair this token makes, kept keys and one-time keys alike, starts here.
        ``token_object=False`` makes session objects: ``CKA_TOKEN`` is set false on both halves
        whatever ATTRIBUTES say, so they never reach the token's storage.
        """
        public_extra, private_extra = self.keygen_attributes.templates(spec.kind)
        public_t: dict[Attribute, Any] = {Attribute.VERIFY: True, **public_extra}
        private_t: dict[Attribute, Any] = {Attribute.SIGN: True, Attribute.SENSITIVE: True,
                                           Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True, **private_extra}
        if not token_object:
            public_t[Attribute.TOKEN] = private_t[Attribute.TOKEN] = False
        if spec.kind == "RSA":
            key_type, length = KeyType.RSA, spec.bits
            public_t[Attribute.PUBLIC_EXPONENT] = spec.exponent.to_bytes((spec.exponent.bit_length() + 7) // 8, "big")
        elif spec.kind == "EC":
            key_type, length = KeyType.EC, None
            public_t[Attribute.EC_PARAMS] = encode_named_curve_parameters(spec.curve)
        else:
            key_type, length = KeyType.EC_EDWARDS, None
            public_t[Attribute.EC_PARAMS] = _ED25519_PARAMS
        return KeyPairTemplate(key_type, length, public_t, private_t, token_object)

    def _generate_keypair(self, session: Any, alias: str, template: KeyPairTemplate) -> tuple[Any, Any, PublicKey]:
        """(public, private) objects of a new key pair labelled ``alias`` and its public key as read
        back from the token (inside :meth:`_run`)."""
        def generate() -> tuple[Any, Any, PublicKey]:
            pub, priv = session.generate_keypair(
                template.key_type, template.length, id=alias.encode("utf-8"), label=alias,
                store=template.token_object, capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=template.public, private_template=template.private)
            return pub, priv, _public_from_object(pub, alias)

        try:
            return generate()
        except KEYGEN_RETRY_ERRORS as exc:
            if not template.token_object:
                raise
            # SoftHSM2's file store fails now and then when another process reads or writes the
            # token at the same moment: the generation fails, the new objects' handles are
            # already invalid, or the new public key reads back with empty attributes. Clear any
            # half-written pair and try once more.
            log.warning("worker %s: %s generating key '%s'; retrying once", self.config.name,
                        type(exc).__name__, alias)
            self._destroy_pair(session, alias)
            try:
                return generate()
            except UnreadablePublicKeyError:
                self._destroy_pair(session, alias)  # no half-usable key left behind
                raise

    def _destroy_pair(self, session: Any, alias: str) -> None:
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for obj in self._find(session, cls, alias):
                obj.destroy()

    def generate_key(self, alias: str, keyalg: str, keyspec: str) -> None:
        alias = alias.strip()
        if not alias:
            raise BadRequestError("the key alias is empty; give one with -alias")
        spec = parse_key_spec(keyalg, keyspec)
        template = self._keypair_template(spec)

        def op(session: Any) -> None:
            if self._find(session, ObjectClass.PRIVATE_KEY, alias):
                raise ConflictError(f"the token already has a key '{alias}'; choose another alias "
                                    f"or remove it with signpeer removekey {self.config.name} {alias}")
            _pub, priv, public = self._generate_keypair(session, alias, template)
            if self.cache_keys:
                self._objects[alias] = priv
                self._wrappers[alias] = wrap_key(self._key_signer, alias, public)

        self._run(f"generating key '{alias}'", op)
        log.info("worker %s: generated %s key '%s' in the PKCS#11 token", self.config.name, spec.describe(), alias)

    # -- one-time keys (signpeer-onetimecrypto's KEYSTORAGE=SESSION) -------------------------
    def generate_session_key(self, alias: str, keyalg: str, keyspec: str, token_object: bool = False) -> PrivateKey:
        """A new key pair for short use, returned as a wrapper key that signs in the token.

        By default both halves are session objects (``CKA_TOKEN=false``): ~0.3 ms instead of
        ~20 ms in SoftHSM2, never written to the token's storage, and gone by themselves when
        the session closes or the process ends, so a crash leaves nothing behind.
        ``token_object=True`` makes token objects instead (for HSMs that cannot sign with
        session objects). The alias is not checked for an existing key (callers make unique
        ones), the handle is registered for :meth:`sign_with_key` whatever
        ``CACHE_PRIVATEKEY`` says, and :meth:`destroy_session_key` deletes the pair.
        """
        alias = alias.strip()
        if not alias:
            raise BadRequestError("the key alias is empty")
        spec = parse_key_spec(keyalg, keyspec)
        template = self._keypair_template(spec, token_object=token_object)

        def op(session: Any) -> PublicKey:
            # Reading the public key back is a PKCS#11 call too: under the lock, like every call.
            pub, priv, public = self._generate_keypair(session, alias, template)
            # Registered under the lock: a reopened session (which forgets them) cannot come between.
            self._objects[alias] = priv  # sign_with_key finds it without a search
            self._session_keys[alias] = (pub, priv)
            return public

        public = self._run(f"generating one-time key '{alias}'", op)
        key = wrap_key(self._key_signer, alias, public)
        # One timing for every session key of this spec: a new key's first signature (a one-time
        # key's certificate request, made in a thread) no longer decides alone whether its
        # signatures may run inline (run_blocking); the spec's keys sign alike in one token.
        key.timing = self._session_timings.setdefault((spec, token_object), SignTiming())
        return key

    def destroy_session_key(self, alias: str) -> None:
        """Delete a key pair made by :meth:`generate_session_key`; no error when it is gone already.

        Deleted by its object handles, without a search. After the session was reopened the
        handles are unknown (session objects died with the old session): then whatever still
        carries the alias (token objects) is searched for and deleted.
        """
        def op(session: Any) -> None:
            # Under the lock: handles known now belong to the open session (see _close_session_locked).
            handles = self._session_keys.pop(alias, None)
            self._objects.pop(alias, None)
            self._wrappers.pop(alias, None)
            objects = handles if handles is not None else [
                obj for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY) for obj in self._find(session, cls, alias)]
            for obj in objects:
                try:
                    obj.destroy()
                except (*HANDLE_ERRORS, *RECONNECT_ERRORS):
                    pass  # gone with its session, or destroyed by another process: nothing left to delete

        try:
            self._run(f"deleting one-time key '{alias}'", op)
        finally:
            self._session_keys.pop(alias, None)  # the token was offline: forget it all the same
            self._objects.pop(alias, None)

    def remove_key(self, alias: str) -> None:
        def op(session: Any) -> None:
            privs = self._find(session, ObjectClass.PRIVATE_KEY, alias)
            others = self._find(session, ObjectClass.PUBLIC_KEY, alias) + self._find(
                session, ObjectClass.CERTIFICATE, alias)
            if not privs and not others:
                raise KeyNotFoundError(f"no key '{alias}' in the {self._where}")
            # Without a private key, whatever is left under the alias (a public key or certificate
            # orphaned by an interrupted generation or removal) goes too.
            self._objects.pop(alias, None)
            self._wrappers.pop(alias, None)
            for obj in privs + others:
                try:
                    obj.destroy()
                except HANDLE_ERRORS:
                    pass  # already destroyed (by another process)

        self._run(f"removing key '{alias}'", op)
