"""CA connectors: how a worker that needs a fresh certificate (a one-time key) gets it.

A CA connector is a class registered through the ``signpeer_ca_connectors`` hook and chosen by
a worker property (the one-time worker's ``CACONNECTOR_IMPLEMENTATION``) by its ``type_name``
or one of its ``implementation_aliases`` (SignServer's Java class names). The worker makes one
instance when it loads and calls :meth:`CAConnector.request_certificate` with a
:class:`CertificateRequest` per signing request. The connector returns the chain, leaf first,
or raises :class:`CARefusedError` with the CA's reason (the signing request then fails with
502 and that reason). The worker checks what comes back (the leaf's public key, validity) and
enforces its wait timeout; a connector need not.

Everything here is part of the public plugin API (:mod:`signpeer_core.api`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509

from signpeer_core.errors import BadRequestError, SignpeerError
from signpeer_core.tokens import PropertyDoc

if TYPE_CHECKING:
    from signpeer_core.keys import PrivateKey
    from signpeer_core.workers import Worker


class CARefusedError(SignpeerError):
    """The CA refused to issue (its reason is in the message); the signing request fails with 502."""

    status = 502


@dataclass
class CertificateRequest:
    """Everything a CA needs to issue one certificate for a one-time key."""

    transaction_id: str
    worker_name: str
    csr_der: bytes
    public_key_der: bytes
    username: str
    subject_dn: str
    subject_alt_name: str
    ca_name: str
    end_entity_profile: str
    certificate_profile: str
    signature_algorithm: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    deadline: float  # epoch seconds: after this nobody waits for the answer
    #: The token claims the worker's templates used (path → text, e.g. ``{"email": "a@example.com"}``),
    #: so that a CA can apply its own policy to them; empty without a token.
    token_claims: dict[str, str] = field(default_factory=dict)
    #: Only connectors with ``needs_private_key`` get the key; it is never stored or sent.
    private_key: PrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_der_x509_csr(self.csr_der)

    def to_json(self) -> dict[str, Any]:
        """The stored and transmitted form (the peer protocol's RA request body)."""
        return {
            "transactionId": self.transaction_id, "worker": self.worker_name,
            "csr": base64.b64encode(self.csr_der).decode(),
            "publicKey": base64.b64encode(self.public_key_der).decode(),
            "username": self.username, "subjectDn": self.subject_dn, "subjectAltName": self.subject_alt_name,
            "caName": self.ca_name, "endEntityProfile": self.end_entity_profile,
            "certificateProfile": self.certificate_profile, "signatureAlgorithm": self.signature_algorithm,
            "notBefore": self.not_before.isoformat() if self.not_before else None,
            "notAfter": self.not_after.isoformat() if self.not_after else None,
            "deadline": self.deadline, "tokenClaims": dict(self.token_claims),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertificateRequest:
        """Parse :meth:`to_json`'s form; :class:`BadRequestError` names what is malformed."""
        try:
            return cls(
                transaction_id=str(data["transactionId"]), worker_name=str(data.get("worker", "")),
                csr_der=base64.b64decode(data["csr"]), public_key_der=base64.b64decode(data["publicKey"]),
                username=str(data.get("username", "")), subject_dn=str(data["subjectDn"]),
                subject_alt_name=str(data.get("subjectAltName") or ""), ca_name=str(data.get("caName", "")),
                end_entity_profile=str(data.get("endEntityProfile", "")),
                certificate_profile=str(data.get("certificateProfile", "")),
                signature_algorithm=str(data.get("signatureAlgorithm", "")),
                not_before=dt.datetime.fromisoformat(data["notBefore"]) if data.get("notBefore") else None,
                not_after=dt.datetime.fromisoformat(data["notAfter"]) if data.get("notAfter") else None,
                deadline=float(data.get("deadline", 0)),
                token_claims=_claims(data.get("tokenClaims")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise BadRequestError(f"malformed RA request: {type(exc).__name__}: {exc}") from exc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def _claims(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("\"tokenClaims\" must be an object of strings")
    return dict(value)


class CAConnector:
    """Base of CA connectors. One instance per worker, made when the worker loads.

    Subclasses set ``type_name`` (and optionally ``implementation_aliases``, ``properties``,
    ``required``, ``needs_private_key``) and implement :meth:`request_certificate`.
    """

    type_name: ClassVar[str] = ""
    implementation_aliases: ClassVar[tuple[str, ...]] = ()
    #: The worker properties this connector reads (``signpeer plugins`` and the docs show them).
    properties: ClassVar[tuple[PropertyDoc, ...]] = ()
    #: Worker properties this connector cannot do without (checked by :meth:`check_configuration`).
    required: ClassVar[tuple[str, ...]] = ()
    #: True when the connector signs with the one-time key itself (it gets ``request.private_key``).
    needs_private_key: ClassVar[bool] = False

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.config = worker.config
        self.services = worker.services

    def check_configuration(self) -> list[str]:
        """Problems found at load (each makes the worker OFFLINE); read files here, not per request."""
        return [f"{p} is required by {self.type_name}" for p in self.required if not self.config.get_str(p)]

    def offline_reasons(self) -> list[str]:
        """Problems that come and go (e.g. an expired CA certificate); memory only, called by status reads."""
        return []

    async def request_certificate(self, request: CertificateRequest) -> list[x509.Certificate]:
        """The chain for ``request``, leaf first; :class:`CARefusedError` when the CA refuses."""
        raise NotImplementedError

    def timeout_message(self, request: CertificateRequest, waited: float) -> str:
        """The 503 message when no certificate came within the worker's wait timeout."""
        return (f"no certificate from {self.type_name} within {waited:g} s "
                f"(CACONNECTOR_WAITTIMEOUT of worker '{self.worker.name}')")

    def close(self) -> None:
        """The worker is unloaded (reload or shutdown)."""
