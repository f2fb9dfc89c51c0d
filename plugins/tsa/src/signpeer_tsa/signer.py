"""``TimeStampSigner``: SignServer's RFC 3161 time-stamp authority as a signpeer signer.

It answers a DER ``TimeStampReq`` (the request data, whatever the transport: ``/signserver/tsa``,
the REST ``/process``, or a CMS signer's ``TSA_WORKER`` in process) with a DER ``TimeStampResp``:
granted with a token signed by the worker's key, or rejected with the ``PKIFailureInfo`` of what
the policy refuses. Key, certificate, algorithm, authorization and the hot path are
:class:`~signpeer_core.api.BaseSigner`'s; the properties are read by :mod:`.config`, the
protocol is :mod:`.protocol`, serial numbers come from :mod:`.serials`.

Every time-stamp has a line in the worker log (logger ``signpeer.worker.tsa``, next to the
pipeline's line of the same request id) with its status, serial number, policy and the hash.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from asn1crypto import core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from signpeer_core.api import (
    BadRequestError,
    BaseSigner,
    KeyHandle,
    PropertyDoc,
    SignatureAlgorithm,
    SignRequest,
    WorkerOfflineError,
    verify,
)
from signpeer_tsa.assembly import Template, subject_name, tlv, tsa_name
from signpeer_tsa.config import TsaConfig, read_config
from signpeer_tsa.protocol import (
    Rejection,
    granted_status,
    read_request,
    rejected,
    signing_certificate_attribute,
)
from signpeer_tsa.serials import serial_numbers

if TYPE_CHECKING:
    from signpeer_core.api import Runtime, Services, WorkerConfig

tsa_log = logging.getLogger("signpeer.worker.tsa")


def certificate_problems(chain: list[x509.Certificate], require_valid_chain: bool) -> list[str]:
    """Why ``chain`` cannot sign time-stamps (SignServer's words): the leaf must carry the
    timeStamping extended key usage, alone and critical (RFC 3161 §2.3)."""
    problems: list[str] = []
    try:
        ext = chain[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        ext = None
    usages = list(ext.value) if ext is not None else []
    if ExtendedKeyUsageOID.TIME_STAMPING not in usages:
        problems.append("Missing extended key usage timeStamping")
    if ext is None or not ext.critical:
        problems.append("The extended key usage extension must be present and marked as critical")
    if ExtendedKeyUsageOID.TIME_STAMPING in usages and len(usages) > 1:
        problems.append("No other extended key usages than timeStamping is allowed")
    if require_valid_chain:
        for cert, issuer in zip(chain, chain[1:], strict=False):
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, Exception):
                problems.append("Not strictly valid chain and REQUIREVALIDCHAIN specified")
                break
    return problems


class TimeStampSigner(BaseSigner):
    """RFC 3161 time-stamp authority (SignServer's ``org.signserver.module.tsa.TimeStampSigner``)."""

    type_name = "TimeStampSigner"
    implementation_aliases = ("org.signserver.module.tsa.TimeStampSigner",
                              "org.signserver.server.signers.TimeStampSigner")
    properties = BaseSigner.properties + (
        PropertyDoc("DEFAULTTSAPOLICYOID", "— (required)", "policy of tokens whose request names none"),
        PropertyDoc("ACCEPTEDPOLICIES", "—", "';'-separated policies a request may name (empty: none)"),
        PropertyDoc("ACCEPTANYPOLICY", "false", "true: a request may name any policy (then no ACCEPTEDPOLICIES)"),
        PropertyDoc("ACCEPTEDALGORITHMS", "all", "';'-separated hashes accepted in requests: GOST3411, MD5, SHA1, "
                    "SHA224, SHA256, SHA384, SHA512, RIPEMD128, RIPEMD160, RIPEMD256"),
        PropertyDoc("ACCEPTEDEXTENSIONS", "none", "';'-separated extension OIDs a request may carry"),
        PropertyDoc("ACCURACYSECONDS", "—", "accuracy in the token (seconds)"),
        PropertyDoc("ACCURACYMILLIS", "—", "accuracy in the token (milliseconds, 1-999)"),
        PropertyDoc("ACCURACYMICROS", "—", "accuracy in the token (microseconds, 1-999)"),
        PropertyDoc("ORDERING", "false", "the token's ordering field"),
        PropertyDoc("TSA", "—", "the TSA's name in the token (a DN)"),
        PropertyDoc("TSA_FROM_CERT", "false", "the TSA's name from the signer certificate's subject"),
        PropertyDoc("INCLUDESTATUSSTRING", "true", "status text in the reply"),
        PropertyDoc("INCLUDESIGNINGTIMEATTRIBUTE", "true", "signing-time signed attribute in the token"),
        PropertyDoc("INCLUDECMSALGORITHMPROTECTATTRIBUTE", "true", "CMS algorithm protection attribute (RFC 6211)"),
        PropertyDoc("INCLUDE_CERTID_ISSUERSERIAL", "true", "issuer and serial in the ESS certificate id"),
        PropertyDoc("CERTIFICATE_DIGEST_ALGORITHM", "SHA256", "hash of the ESS certificate id (SHA1 gives the "
                    "signing-certificate attribute, others signing-certificate-v2)"),
        PropertyDoc("MAXSERIALNUMBERLENGTH", "8", "serial number size in bytes (8-20)"),
        PropertyDoc("REQUIREVALIDCHAIN", "false", "OFFLINE unless each certificate of the chain is issued by the next"),
        PropertyDoc("VERIFY_TOKEN_SIGNATURE", "true", "verify each token's signature before answering"),
        PropertyDoc("TIMESOURCE", "LocalComputerTimeSource", "the clock (only the local clock is supported)"),
    )

    def __init__(self, config: WorkerConfig, services: Services) -> None:
        super().__init__(config, services)
        self.tsa = TsaConfig()
        self._checked: tuple[int, list[str]] = (0, [])
        self._templates: dict[tuple[int, str], tuple[list[x509.Certificate], Template]] = {}
        self._policies: dict[str, bytes] = {}
        self._granted = b""

    def load(self, runtime: Runtime) -> None:
        super().load(runtime)
        self.tsa = read_config(self.config)
        self.fatal_errors.extend(self.tsa.errors)
        self._granted = granted_status(self.tsa)
        self.serials = serial_numbers(self.services.settings.node_id)
        if self.algorithm is not None and self.algorithm.prehashed:
            self.fatal_errors.append(f"{self.algorithm.name} cannot sign time-stamps; use e.g. SHA256withRSA")

    # -- status ---------------------------------------------------------------------------------
    def _problems(self, chain: list[x509.Certificate]) -> list[str]:
        """:func:`certificate_problems` of ``chain``, computed once per chain (memory only)."""
        key, problems = self._checked
        if key != id(chain) or not chain:
            problems = certificate_problems(chain, self.tsa.require_valid_chain) if chain else []
            self._checked = (id(chain), problems)
        return problems

    def offline_reasons(self) -> list[str]:
        reasons = super().offline_reasons()
        if self.chain:
            reasons += [r for r in self._problems(self.chain) if r not in reasons]
        return reasons

    def check_ready(self) -> None:
        super().check_ready()
        if self.chain:
            problems = self._problems(self.chain)
            if problems:
                raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(problems))

    # -- time-stamping --------------------------------------------------------------------------
    def _template(self, handle: KeyHandle, algorithm: SignatureAlgorithm) -> Template:
        """The DER parts of this signer's tokens, built once per chain and algorithm (memory)."""
        key = (id(handle.chain), algorithm.name)
        cached = self._templates.get(key)
        if cached is not None and cached[0] is handle.chain:
            return cached[1]
        cfg = self.tsa
        signer = asn1_x509.Certificate.load(handle.chain[0].public_bytes(serialization.Encoding.DER))
        name = cfg.tsa_name if cfg.tsa_name is not None else (subject_name(handle.chain[0]) if cfg.tsa_from_cert
                                                              else None)
        template = Template.build(handle, algorithm, [signing_certificate_attribute(signer, cfg)],
                                  tsp.Accuracy(cfg.accuracy).dump() if cfg.accuracy else b"", cfg.ordering,
                                  tsa_name(name), cfg.include_algorithm_protection)
        if len(self._templates) > 64:  # tokens that bring a certificate per request
            self._templates.clear()
        self._templates[key] = (handle.chain, template)
        return template

    def sign_data(self, request: SignRequest, handle: KeyHandle, algorithm: SignatureAlgorithm) -> bytes:
        if not request.data:
            raise BadRequestError("Request must contain data")
        cfg = self.tsa
        if handle.chain is not self.chain:  # a token that gives a certificate per request
            problems = self._problems(handle.chain)
            if problems:
                raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(problems))
        try:
            req, policy = read_request(request.data, cfg)
        except Rejection as rejection:
            tsa_log.info("request_id=%s worker=%s status=rejection failure=%s text=%r", request.request_id,
                         self.name, rejection.failure, rejection.text)
            return rejected(rejection, cfg)
        template = self._template(handle, algorithm)
        policy_der = self._policies.get(policy)
        if policy_der is None:
            policy_der = self._policies[policy] = core.ObjectIdentifier(policy).dump()
        serial = self.serials.next(cfg.max_serial_length)
        now = dt.datetime.now(dt.UTC)
        gen_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
        imprint = req["message_imprint"]
        nonce = req["nonce"].native
        token, signed_attrs, signature = template.token(
            handle.private_key, algorithm, policy_der, imprint.dump(), serial, gen_time, nonce,
            bool(req["cert_req"].native), cfg.include_signing_time)
        if cfg.verify_token:
            try:
                verify(handle.chain[0].public_key(), algorithm, signature, signed_attrs)  # type: ignore[arg-type]  # a signer certificate holds a signing key
            except Exception as exc:  # InvalidSignature, or a key of another type than the certificate's
                raise WorkerOfflineError(f"worker '{self.name}': Token validation failed: the signature does not "
                                         f"verify with the signer certificate ({type(exc).__name__})") from None
        if tsa_log.isEnabledFor(logging.INFO):
            tsa_log.info("request_id=%s worker=%s status=granted serial=%x policy=%s hash_alg=%s hash=%s nonce=%s "
                         "gen_time=%s", request.request_id, self.name, serial, policy,
                         imprint["hash_algorithm"]["algorithm"].native, imprint["hashed_message"].native.hex(),
                         nonce, gen_time.isoformat())
        return tlv(0x30, self._granted + token)
