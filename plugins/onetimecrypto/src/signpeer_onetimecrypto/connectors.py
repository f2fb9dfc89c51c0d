"""CA connectors: how a one-time key gets its certificate.

A connector is registered through the ``signpeer_ca_connectors`` hook and named by the
one-time worker's ``CACONNECTOR_IMPLEMENTATION`` (its ``type_name`` or a SignServer class name
alias). It gets a :class:`CertificateRequest` (the CSR, the filled templates, the profile
names, the validity window and the deadline) and returns the chain, leaf first. The worker
checks what comes back; a connector need not.

* :class:`SelfSignedCAConnector` — the one-time key signs its own certificate (tests).
* :class:`LocalCAConnector` — issues with a CA certificate and key configured on the worker.
* ``PeersRAConnector`` (:mod:`.ra`) — queues the request for a CA peer (RA mode).

:func:`verify_request` and :func:`issue_for_request` are the CA side's two steps, shared by the
local CA and by ``signpeer ra-connector`` (the CA peer's RA loop).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.api import (
    BadRequestError,
    CAConnector,
    CARefusedError,
    CertificateRequest,
    ConfigurationError,
    PrivateKey,
    PropertyDoc,
    format_dn,
    issue_certificate,
    parse_dn,
    public_key_der,
    signature_algorithm,
)
from signpeer_onetimecrypto.templates import general_names

if TYPE_CHECKING:
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

#: Validity when CERTIFICATEENDTIME is not set, for connectors that decide it themselves:
#: EJBCA's ENDUSER certificate profile default, so signatures verify for as long as usual.
DEFAULT_VALIDITY = dt.timedelta(days=730)
#: Start of validity when CERTIFICATESTARTTIME is not set: a little back, for clock skew.
DEFAULT_BACKDATE = dt.timedelta(minutes=10)


def verify_request(request: CertificateRequest) -> x509.CertificateSigningRequest:
    """The CA's checks before issuing: the CSR's signature, that its public key is the one the
    request states, and that its subject is the request's subject DN. :class:`CARefusedError`."""
    try:
        csr = request.csr
    except ValueError as exc:
        raise CARefusedError(f"the CSR of request {request.transaction_id} is not a PKCS#10 request: {exc}") from exc
    if not csr.is_signature_valid:
        raise CARefusedError(f"the CSR of request {request.transaction_id} has a bad signature")
    if public_key_der(csr.public_key()) != request.public_key_der:
        raise CARefusedError(f"the CSR of request {request.transaction_id} is for another public key than stated")
    try:
        wanted = parse_dn(request.subject_dn)
    except BadRequestError as exc:
        raise CARefusedError(f"request {request.transaction_id}: {exc.message}") from exc
    if csr.subject != wanted:
        raise CARefusedError(f"the CSR subject '{format_dn(csr.subject)}' of request {request.transaction_id} "
                             f"differs from the requested subject '{request.subject_dn}'")
    return csr


def check_token_claims(request: CertificateRequest, required: list[tuple[str, str]]) -> None:
    """A CA policy on the token claims that travel with a request (``ra serve --require-claim``):
    each ``(path, value)`` must be among the request's claims. :class:`CARefusedError`."""
    for path, value in required:
        got = request.token_claims.get(path)
        if got != value:
            shown = "none" if got is None else repr(got)
            raise CARefusedError(f"request {request.transaction_id}: the CA requires token claim {path}={value!r} "
                                 f"(the request carries {shown}); the signing worker's templates must use "
                                 f"${{JWT.{path}}} for the claim to travel with the request")


def validity(request: CertificateRequest, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or dt.datetime.now(dt.UTC)
    start = request.not_before or now - DEFAULT_BACKDATE
    end = request.not_after or now + DEFAULT_VALIDITY
    if end <= start:
        raise CARefusedError(f"request {request.transaction_id}: the validity ends ({end:%Y-%m-%d %H:%M:%S}) "
                             f"before it starts ({start:%Y-%m-%d %H:%M:%S})")
    return start, end


def issue_for_request(ca_key: PrivateKey, ca_chain: list[x509.Certificate],
                      request: CertificateRequest) -> list[x509.Certificate]:
    """Check ``request`` and issue its certificate with a signer profile; the chain, leaf first."""
    csr = verify_request(request)
    start, end = validity(request)
    try:
        sans = tuple(general_names(request.subject_alt_name)) if request.subject_alt_name else ()
    except (BadRequestError, ConfigurationError) as exc:
        raise CARefusedError(f"request {request.transaction_id}: {exc.message}") from exc
    leaf = issue_certificate(ca_key, ca_chain[0], csr.subject, csr.public_key(), profile="signer",
                        not_before=start, not_after=end, general_names=sans)
    return [leaf, *ca_chain]


class SelfSignedCAConnector(CAConnector):
    """The one-time key signs its own certificate with CERTSIGNATUREALGORITHM. For tests."""

    type_name = "SelfSignedCAConnector"
    implementation_aliases = ("org.signserver.module.onetime.caconnector.SelfSignedCAConnector",)
    needs_private_key = True
    properties = ()
    worker: OneTimeCryptoWorker  # the one worker type that chooses a CA connector (CACONNECTOR_IMPLEMENTATION)

    async def request_certificate(self, request: CertificateRequest) -> list[x509.Certificate]:
        assert request.private_key is not None
        if self.worker.keys_blocking:
            return await anyio.to_thread.run_sync(self._issue, request)
        return self._issue(request)

    @staticmethod
    def _issue(request: CertificateRequest) -> list[x509.Certificate]:
        key = request.private_key
        assert key is not None
        start, end = validity(request)
        name = parse_dn(request.subject_dn)
        alg = signature_algorithm(request.signature_algorithm)
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if request.subject_alt_name:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(general_names(request.subject_alt_name)), critical=False)
        hash_alg = alg.hash_instance()
        kwargs: dict[str, Any] = {"algorithm": hash_alg}
        if alg.pss and hash_alg is not None:  # every PSS algorithm names its hash
            from cryptography.hazmat.primitives.asymmetric import padding

            kwargs["rsa_padding"] = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        return [builder.sign(key, **kwargs)]


class LocalCAConnector(CAConnector):
    """Issues in-process with a CA certificate and key configured on the one-time worker."""

    type_name = "LocalCAConnector"
    implementation_aliases = ()
    required = ("CACERTIFICATE_FILE", "CAKEY_FILE")
    properties = (
        PropertyDoc("CACERTIFICATE_FILE", "—", "PEM file: the issuing CA certificate, then its own chain "
                    "(relative paths: the data directory)"),
        PropertyDoc("CAKEY_FILE", "—", "PEM file with the issuing CA's private key (PKCS#8 or traditional)"),
        PropertyDoc("CAKEY_PASSWORD", "—", "password of CAKEY_FILE when it is encrypted", secret=True),
    )

    def check_configuration(self) -> list[str]:
        problems = super().check_configuration()
        if problems:
            return problems
        settings = self.services.settings
        cert_path = settings.path(self.config.get_str("CACERTIFICATE_FILE"))
        key_path = settings.path(self.config.get_str("CAKEY_FILE"))
        try:
            self.ca_chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
        except (OSError, ValueError) as exc:
            return [f"CACERTIFICATE_FILE {cert_path}: cannot read a PEM certificate ({exc})"]
        password = self.config.get_str("CAKEY_PASSWORD")
        try:
            self.ca_key = serialization.load_pem_private_key(Path(key_path).read_bytes(),
                                                             password.encode() if password else None)
        except (OSError, ValueError, TypeError) as exc:
            return [f"CAKEY_FILE {key_path}: cannot read the CA private key ({exc})"]
        if public_key_der(self.ca_key.public_key()) != public_key_der(self.ca_chain[0]):
            return [f"CAKEY_FILE {key_path} is not the key of the CA certificate in {cert_path}"]
        return []

    def offline_reasons(self) -> list[str]:
        ca = getattr(self, "ca_chain", [None])[0]
        if ca is not None and ca.not_valid_after_utc < dt.datetime.now(dt.UTC):
            return [f"the CA certificate in CACERTIFICATE_FILE expired on {ca.not_valid_after_utc:%Y-%m-%d}"]
        return []

    async def request_certificate(self, request: CertificateRequest) -> list[x509.Certificate]:
        return issue_for_request(self.ca_key, self.ca_chain, request)  # type: ignore[arg-type]  # matched its certificate at load
