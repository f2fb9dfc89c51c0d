"""Signer certificates of a worker: CSR, install (spec §4.4), upload, import into the token.

Installation follows spec §4.4: the leaf must belong to ``NEXTCERTSIGNKEY`` (which is then
promoted to ``DEFAULTKEY``) or ``DEFAULTKEY``; anything else is refused and nothing changes.
The certificate properties, the key promotion and every audit record (SET_WORKER_CONFIG,
CERTINSTALLED, CERTCHAININSTALLED, KEYSELECTED, and RELOAD_WORKER_CONFIG when published) are
one transaction.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.administration.key_retirement import SUPERSEDED, KeyRetirement, with_superseded
from signpeer_core.administration.publishing import Change, stage
from signpeer_core.audit import KEY_MANAGEMENT, WORKER_CONFIG
from signpeer_core.certificates import (
    MAX_CHAIN_LENGTH,
    check_signer_chain,
    configured_chain,
    encode_certificate_property,
)
from signpeer_core.config import is_true
from signpeer_core.errors import BadRequestError, ConflictError, KeyNotFoundError, SignpeerError, UnknownWorkerError
from signpeer_core.keys import (
    PublicKey,
    build_csr,
    certificate_pem,
    csr_signature_algorithm,
    key_kind,
    load_certificates,
    public_key_der,
    signature_algorithm,
)

if TYPE_CHECKING:
    from signpeer_core.administration.base import WorkerRef
    from signpeer_core.tokens import CryptoToken
    from signpeer_core.workers import Worker


log = logging.getLogger("signpeer.admin")


def audit_refusal(install: Callable[..., InstallResult]) -> Callable[..., InstallResult]:
    """A refused install (wrong key, bad chain, ...) is audited: CERTINSTALLED with outcome FAILURE
    and the reason (``ERROR``), then the error goes on to the caller. Nothing else was written."""

    @functools.wraps(install)
    def checked(self: SignerCertificates, id_or_name: WorkerRef, *args: Any, **kwargs: Any) -> InstallResult:
        try:
            return install(self, id_or_name, *args, **kwargs)
        except SignpeerError as exc:
            worker_id = self.find_worker_id(id_or_name) if not isinstance(exc, UnknownWorkerError) else None
            try:
                self.store.audit(self.event("CERTINSTALLED", WORKER_CONFIG, worker_id, {"ERROR": exc.message},
                                            outcome="FAILURE"))
            except Exception as audit_error:  # an unwritable database: the refusal itself still stands
                log.error("cannot write the audit record of a refused certificate install: %s", audit_error)
            raise

    return checked


@dataclass
class CsrResult:
    """A generated PKCS#10 request and what it was made from."""

    csr: x509.CertificateSigningRequest
    alias: str
    subject_dn: str
    signature_algorithm: str
    for_default_key: bool
    for_next_key: bool = False

    @property
    def pem(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.DER)


@dataclass
class InstallResult:
    """What :meth:`SignerCertificates.install_certificate_chain` did."""

    worker_id: int
    alias: str
    promoted: bool
    chain: list[x509.Certificate] = field(default_factory=list)


def as_chain(chain: list[x509.Certificate] | bytes | str) -> list[x509.Certificate]:
    """Certificates given as a list, or as PEM/DER text or bytes (leaf first)."""
    if isinstance(chain, str):
        chain = chain.encode()
    if isinstance(chain, bytes):
        return load_certificates(chain)
    if not chain:
        raise BadRequestError("no certificate given")
    return list(chain)


def _public_key(worker: Worker, token: CryptoToken, alias: str, role: str) -> PublicKey:
    try:
        return token.public_key(alias)
    except KeyNotFoundError:
        raise KeyNotFoundError(
            f"worker '{worker.name}' has no key '{alias}' ({role}); generate it with "
            f"signpeer generatekey {worker.name} -alias {alias}") from None


class SignerCertificates(KeyRetirement):
    """The certificate operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def generate_csr(
        self, id_or_name: WorkerRef, dn: str | None = None, sig_alg: str | None = None,
        alias: str | None = None, next_key: bool | None = False, explicit_ecc: bool = False,
    ) -> CsrResult:
        """A PKCS#10 request for DEFAULTKEY, NEXTCERTSIGNKEY (``next_key``) or ``alias``.

        ``next_key=None``: NEXTCERTSIGNKEY when one is pending, else DEFAULTKEY (a CA's renewal).
        Subject: ``dn``, else ``REQUESTDN``, else ``CN=<alias>``. Algorithm: ``sig_alg``, else
        SignServer's rule (spec §2.2) over REQUESTSIGNATUREALGORITHM, SIGNATUREALGORITHM and the
        key's current certificate (the configured one when it matches, else the token's
        placeholder).
        """
        config, worker, token = self.worker_token(id_or_name)
        if next_key is None:
            next_key = bool(config.get_str("NEXTCERTSIGNKEY")) and not alias
        if next_key and alias:
            raise BadRequestError("give either an alias or the next key, not both")
        if next_key:
            alias = config.get_str("NEXTCERTSIGNKEY")
            if not alias:
                raise BadRequestError(
                    f"worker '{worker.name}' has no NEXTCERTSIGNKEY; generate a key and set it "
                    f"(signpeer generatekey {worker.name}, then signpeer setproperty {worker.name} "
                    "NEXTCERTSIGNKEY <alias>)")
            role = "NEXTCERTSIGNKEY"
        elif alias:
            role = "alias"
        else:
            alias = config.get_str("DEFAULTKEY")
            if not alias:
                raise BadRequestError(f"worker '{worker.name}' has no DEFAULTKEY; give -alias <alias>")
            role = "DEFAULTKEY"
        alias = alias.strip()
        public = _public_key(worker, token, alias, role)
        if explicit_ecc and key_kind(public) == "EC":
            raise BadRequestError("-explicitecc (explicit EC parameters in the CSR) is not supported; "
                                  "leave it out to use the named curve")
        subject = (dn or "").strip() or config.get_str("REQUESTDN") or f"CN={alias}"
        if sig_alg and sig_alg.strip():
            algorithm = signature_algorithm(sig_alg).name
        else:
            pub_der = public_key_der(public)
            cert = next((c for c in configured_chain(config)[:1] if public_key_der(c) == pub_der), None)
            if cert is None:
                chain = token.certificate_chain(alias)
                cert = chain[0] if chain else None
            algorithm = csr_signature_algorithm(config.get_str("REQUESTSIGNATUREALGORITHM"),
                                                config.get_str("SIGNATUREALGORITHM"), cert)
            if cert is None and not config.get_str("REQUESTSIGNATUREALGORITHM") and \
                    signature_algorithm(algorithm).kind != key_kind(public):
                # No certificate to derive from: apply the rule's certificate branch to the key itself.
                kind = key_kind(public)
                algorithm = "Ed25519" if kind == "Ed25519" else "SHA512with" + ("ECDSA" if kind == "EC" else kind)
        csr = build_csr(token.private_key(alias), subject, algorithm)
        result = CsrResult(csr, alias, subject, algorithm, alias == config.get_str("DEFAULTKEY"), bool(next_key))
        stage(self.store, Change().record(self.event("GENCSR", KEY_MANAGEMENT, worker.id, {
            "KEYALIAS": alias, "FOR_DEFAULTKEY": str(result.for_default_key).lower(),
            "CRYPTOTOKEN": self.token_name(worker), "CSR": base64.b64encode(result.der).decode()})))
        return result

    @audit_refusal
    def install_certificate_chain(
        self, id_or_name: WorkerRef, chain: list[x509.Certificate] | bytes | str, keep_chain: bool = False,
        scope: str = "GLOBAL", extra_properties: Mapping[str, str] | None = None, reload: bool = False,
    ) -> InstallResult:
        """Install a signer certificate (leaf first, then its issuers) in the worker configuration.

        The leaf's public key must be the key of ``NEXTCERTSIGNKEY`` (which then becomes
        ``DEFAULTKEY``) or of ``DEFAULTKEY``; otherwise :class:`ConflictError` and nothing
        changes. A lone leaf replaces the chain, unless ``keep_chain`` or ``PEERS_KEEPCHAIN=true``
        keeps the CA part of the existing chain. ``extra_properties`` (e.g. ``PEERS_ISSUED``) are
        written in the same transaction; ``reload`` publishes the change (active at once).
        """
        certs = as_chain(chain)
        if len(certs) > MAX_CHAIN_LENGTH:  # before any work on a flood of certificates
            check_signer_chain(certs)
        # Worker properties have one scope in signpeer: a NODE upload is stored (and so audited)
        # as GLOBAL; the audit record keeps what was asked for.
        scope_u = "GLOBAL"
        asked = "NODE" if scope.strip().upper() in ("NODE", "NODE.") else "GLOBAL"
        config, worker, token = self.worker_token(id_or_name)
        leaf = certs[0]
        leaf_key = public_key_der(leaf)
        next_alias = config.get_str("NEXTCERTSIGNKEY")
        default_alias = config.get_str("DEFAULTKEY")
        matched: str | None = None
        promoted = False
        tried = []
        for alias, is_next in ((next_alias, True), (default_alias, False)):
            if not alias:
                continue
            tried.append(f"{'NEXTCERTSIGNKEY' if is_next else 'DEFAULTKEY'} '{alias}'")
            try:
                if public_key_der(token.public_key(alias)) == leaf_key:
                    matched, promoted = alias, is_next and alias != default_alias
                    break
            except KeyNotFoundError:
                continue
        if matched is None:
            if not tried:
                raise ConflictError(f"worker '{worker.name}' has neither DEFAULTKEY nor NEXTCERTSIGNKEY; "
                                    "set DEFAULTKEY to the key the certificate was issued for")
            raise ConflictError(
                f"the certificate '{leaf.subject.rfc4514_string()}' does not match the current or next key of "
                f"worker '{worker.name}' ({', '.join(tried)}); nothing was changed. Install the certificate "
                "issued for one of these keys (make a CSR with signpeer generatecertreq)")
        keep = keep_chain or is_true(config.get("PEERS_KEEPCHAIN"))
        if len(certs) == 1 and keep:
            certs = [leaf] + configured_chain(config)[1:]
        check_signer_chain(certs)  # order, signatures, validity, basic constraints, length; nothing changed yet
        sets = {"SIGNERCERT": encode_certificate_property([leaf]),
                "SIGNERCERTCHAIN": encode_certificate_property(certs)}
        sets.update({k.upper(): str(v) for k, v in (extra_properties or {}).items()})
        removes: list[str] = []
        node = self.services.settings.node_id
        events = [
            self.event("CERTINSTALLED", WORKER_CONFIG, worker.id, {
                "CERTIFICATE": certificate_pem([leaf]), "SCOPE": scope_u, "REQUESTED_SCOPE": asked, "NODE": node}),
            self.event("CERTCHAININSTALLED", WORKER_CONFIG, worker.id, {
                "CERTIFICATECHAIN": certificate_pem(certs), "SCOPE": scope_u, "NODE": node}),
        ]
        if promoted:
            sets["DEFAULTKEY"] = matched
            removes.append("NEXTCERTSIGNKEY")
            if default_alias and default_alias.lower() != matched.lower():  # retired later (key_retirement.py)
                sets[SUPERSEDED] = with_superseded(config.get_str(SUPERSEDED), default_alias, time.time())
            events.append(self.event("KEYSELECTED", WORKER_CONFIG, worker.id, {
                "KEYALIAS": matched, "CRYPTOTOKEN": self.token_name(worker), "SCOPE": scope_u}))
        elif next_alias and next_alias == matched:
            removes.append("NEXTCERTSIGNKEY")  # NEXTCERTSIGNKEY == DEFAULTKEY: nothing pending any more
        if reload:
            events.append(self.reload_event(worker.id))
        self.apply(self.worker_change(config, sets, removes, extra_audit=events), [worker.id] if reload else None)
        if promoted:
            self.retire_after_renewal(config)
        return InstallResult(worker.id, matched, promoted, certs)

    def upload_signer_certificate(
        self, id_or_name: WorkerRef, certificate: x509.Certificate | bytes | str, scope: str = "GLOBAL",
    ) -> InstallResult:
        """``uploadsignercertificate``: a new leaf, keeping the CA part of the existing chain."""
        certs = as_chain(certificate if not isinstance(certificate, x509.Certificate) else [certificate])
        if len(certs) != 1:
            raise BadRequestError(f"expected one certificate, the file has {len(certs)}; "
                                  "use uploadsignercertificatechain for a chain")
        return self.install_certificate_chain(id_or_name, certs, keep_chain=True, scope=scope)

    def import_certificate_chain(
        self, id_or_name: WorkerRef, chain: list[x509.Certificate] | bytes | str, alias: str,
        authentication_code: str | None = None,
    ) -> None:
        """Store a chain in the token next to key ``alias`` (``importcertificatechain``)."""
        certs = as_chain(chain)
        if len(certs) > MAX_CHAIN_LENGTH:  # before any work on a flood of certificates
            check_signer_chain(certs)
        config = self.resolve(id_or_name)
        worker, token = self.token(config, active=False)
        if not token.is_active:
            if not authentication_code:
                self.token(config)  # raises the "not activated" error
            token.activate(authentication_code or "")
        public = _public_key(worker, token, alias, "alias")
        if public_key_der(public) != public_key_der(certs[0]):
            raise ConflictError(f"the first certificate of the chain is not for key '{alias}'; nothing was "
                                "imported. Put the certificate issued for that key first")
        check_signer_chain(certs)  # order, signatures, validity, basic constraints, length
        try:
            token.import_certificate_chain(alias, certs)
        except NotImplementedError as exc:
            raise BadRequestError(f"{exc}; install the chain in the worker configuration with "
                                  f"signpeer uploadsignercertificatechain {worker.name} GLOB <file>") from None
        stage(self.store, Change().record(self.event("CERTCHAININSTALLED", KEY_MANAGEMENT, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self.token_name(worker), "CERTIFICATECHAIN": certificate_pem(certs)})))
