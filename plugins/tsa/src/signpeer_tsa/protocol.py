"""RFC 3161 on the authority's side: a ``TimeStampReq`` checked against the worker's policy, the
``TSTInfo`` and the signed attributes of its token, and the ``TimeStampResp`` (granted or rejected
with its ``PKIFailureInfo``). Built with asn1crypto; the signing is the core's ``sign_cms``."""

from __future__ import annotations

import hashlib

from asn1crypto import cms, tsp, x509

from signpeer_core.api import TimeStampResponse
from signpeer_tsa.config import DIGEST_SIZES, TsaConfig

GRANTED_TEXT = "Operation Okay"


class Rejection(Exception):
    """A request the TSA answers with status ``rejection``: ``failure`` is the PKIFailureInfo bit
    (asn1crypto's name: bad_alg, bad_request, bad_data_format, unaccepted_policy, ...)."""

    def __init__(self, failure: str, text: str) -> None:
        super().__init__(text)
        self.failure = failure
        self.text = text


def read_request(der: bytes, cfg: TsaConfig) -> tuple[tsp.TimeStampReq, str]:
    """The DER request and the policy OID of its token, after :func:`check_request`;
    :class:`Rejection` (badDataFormat) when it is not a TimeStampReq."""
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        # The fields a token uses, parsed now (lazily parsed ones would fail later): cheaper than .native
        req["message_imprint"]["hashed_message"].native  # noqa: B018
        req["nonce"].native  # noqa: B018
        req["cert_req"].native  # noqa: B018
        return req, check_request(req, cfg)
    except Rejection:
        raise
    except (ValueError, TypeError, KeyError, AttributeError):
        raise Rejection("bad_data_format", "The request could not be parsed.") from None


def check_request(req: tsp.TimeStampReq, cfg: TsaConfig) -> str:
    """Refuse what the policy does not accept (RFC 3161 §2.4.2, SignServer's checks and texts);
    returns the policy OID of the token (the requested one, else ``DEFAULTTSAPOLICYOID``)."""
    if req["version"].native != "v1":
        raise Rejection("bad_data_format", "unsupported request version")
    imprint = req["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].dotted
    if algorithm not in cfg.accepted_algorithms:
        raise Rejection("bad_alg", "request contains unknown algorithm")
    if len(imprint["hashed_message"].native) != DIGEST_SIZES.get(algorithm, -1):
        raise Rejection("bad_data_format", "imprint digest the wrong length")
    policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
    if policy is not None and cfg.accepted_policies is not None and policy not in cfg.accepted_policies:
        raise Rejection("unaccepted_policy", "request contains unknown policy")
    if req["extensions"].native:
        for ext in req["extensions"]:
            if ext["extn_id"].dotted not in cfg.accepted_extensions:
                raise Rejection("unaccepted_extensions", "request contains unknown extension")
    return policy or cfg.default_policy


def signing_certificate_attribute(signer: x509.Certificate, cfg: TsaConfig) -> cms.CMSAttribute:
    """ESS signing-certificate-v2 (RFC 5035) naming the TSA's certificate; the v1 attribute
    (RFC 2634) when ``CERTIFICATE_DIGEST_ALGORITHM`` is SHA1, as SignServer does."""
    cert_hash = hashlib.new(cfg.certificate_digest, signer.dump()).digest()
    issuer_serial = tsp.IssuerSerial({
        "issuer": [x509.GeneralName({"directory_name": signer.issuer})],
        "serial_number": signer.serial_number,
    }) if cfg.include_issuer_serial else None
    if cfg.certificate_digest == "sha1":
        v1: dict[str, object] = {"cert_hash": cert_hash}
        if issuer_serial is not None:
            v1["issuer_serial"] = issuer_serial
        return cms.CMSAttribute({"type": "signing_certificate",
                                 "values": [tsp.SigningCertificate({"certs": [tsp.ESSCertID(v1)]})]})
    v2: dict[str, object] = {"hash_algorithm": {"algorithm": cfg.certificate_digest}, "cert_hash": cert_hash}
    if issuer_serial is not None:
        v2["issuer_serial"] = issuer_serial
    return cms.CMSAttribute({"type": "signing_certificate_v2",
                             "values": [tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2(v2)]})]})


def granted_status(cfg: TsaConfig) -> bytes:
    """The DER ``PKIStatusInfo`` of a granted reply (the token follows it in the ``TimeStampResp``)."""
    status: dict[str, object] = {"status": "granted"}
    if cfg.include_status_string:
        status["status_string"] = [GRANTED_TEXT]
    return bytes(tsp.PKIStatusInfo(status).dump())


def rejected(rejection: Rejection, cfg: TsaConfig) -> bytes:
    """The DER ``TimeStampResp`` with status ``rejection`` and the failure's bit."""
    status: dict[str, object] = {"status": "rejection", "fail_info": tsp.PKIFailureInfo({rejection.failure})}
    if cfg.include_status_string:
        status["status_string"] = [rejection.text]
    return TimeStampResponse({"status": tsp.PKIStatusInfo(status)}).dump()
