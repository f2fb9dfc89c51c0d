"""Time-stamp tokens assembled from DER parts: the fast path of :class:`~.signer.TimeStampSigner`.

Building a token with asn1crypto objects costs milliseconds (it encodes, copies and sorts parsed
trees on every dump), many times the signature itself. Everything but a handful of fields is the
same for every token of a worker, so asn1crypto builds those parts once (:meth:`Template.build`
signs a sample token with the core's ``sign_cms`` and keeps its pieces as DER), and each request
only encodes what changes: the ``TSTInfo`` (imprint, serial, time, nonce), the signing-time and
message-digest attributes, the signature. The encodings here are the few DER rules those need
(X.690: definite lengths, minimal integers, SET OF sorted, times in UTC without trailing zeros);
the tests parse every token with asn1crypto, compare it with its canonical re-encoding and verify
it with openssl.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from signpeer_core.api import KeyHandle, PrivateKey, SignatureAlgorithm, cms_digest_name, sign, sign_cms

_SIGNED_DATA_OID = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
_TST_INFO_OID = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.4").dump()
_SIGNING_TIME_OID = core.ObjectIdentifier("1.2.840.113549.1.9.5").dump()
_MESSAGE_DIGEST_OID = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()
_CONSTANT_ATTRIBUTES = ("content_type", "signing_certificate", "signing_certificate_v2", "cms_algorithm_protection")


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    return bytes((tag,)) + _length(len(content)) + content


def integer(value: int) -> bytes:
    """DER INTEGER of a non-negative value (minimal, with a leading 0 when the top bit is set)."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def generalized_time(when: dt.datetime) -> bytes:
    """DER GeneralizedTime in UTC, fractions of a second without trailing zeros (RFC 3161 §2.4.2)."""
    when = when.astimezone(dt.UTC)
    text = when.strftime("%Y%m%d%H%M%S")
    if when.microsecond:
        text += "." + f"{when.microsecond:06d}".rstrip("0")
    return tlv(0x18, (text + "Z").encode())


def signing_time(when: dt.datetime) -> bytes:
    """RFC 5652 §11.3: UTCTime until 2049, GeneralizedTime after."""
    when = when.astimezone(dt.UTC)
    if 1950 <= when.year < 2050:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


@dataclass(frozen=True)
class Template:
    """The DER parts that are the same for every token of one signer (certificate, chain, algorithm
    and the worker's options)."""

    digest: str
    constant_attrs: tuple[bytes, ...]
    signer_prefix: bytes  #: version, sid, digestAlgorithm
    signature_algorithm: bytes
    digest_algorithms: bytes  #: SET OF DigestAlgorithmIdentifier
    certificates: bytes  #: [0] IMPLICIT CertificateSet
    extras: bytes  #: TSTInfo fields after genTime that never change: accuracy, ordering (nonce comes between)
    tsa: bytes  #: [0] EXPLICIT GeneralName, or empty

    @classmethod
    def build(cls, handle: KeyHandle, algorithm: SignatureAlgorithm, constant: list[cms.CMSAttribute],
              accuracy: bytes, ordering: bool, tsa: bytes, include_algorithm_protection: bool) -> Template:
        """Sign one sample token the slow way and keep its invariant pieces."""
        sample = cms.ContentInfo.load(sign_cms(b"\x30\x00", handle.private_key, algorithm, handle.chain[0],
                                               handle.chain, content_type="tst_info", extra_signed_attrs=constant,
                                               include_signing_time=False,
                                               algorithm_protection=include_algorithm_protection))
        signed = sample["content"]
        signer = signed["signer_infos"][0]
        attrs = tuple(a.dump() for a in signer["signed_attrs"] if a["type"].native in _CONSTANT_ATTRIBUTES)
        return cls(
            digest=cms_digest_name(algorithm),
            constant_attrs=attrs,
            signer_prefix=signer["version"].dump() + signer["sid"].dump() + signer["digest_algorithm"].dump(),
            signature_algorithm=signer["signature_algorithm"].dump(),
            digest_algorithms=signed["digest_algorithms"].dump(),
            certificates=signed["certificates"].dump(),
            extras=accuracy + (tlv(0x01, b"\xff") if ordering else b""),
            tsa=tsa,
        )

    def token(self, key: PrivateKey, algorithm: SignatureAlgorithm, policy: bytes, imprint: bytes, serial: int,
              gen_time: dt.datetime, nonce: int | None, cert_req: bool, with_signing_time: bool
              ) -> tuple[bytes, bytes, bytes]:
        """(token, signed attributes, signature): a DER ContentInfo with the SignedData over a new
        TSTInfo; ``policy`` and ``imprint`` are DER (the imprint as the request carried it)."""
        tst_info = tlv(0x30, b"\x02\x01\x01" + policy + imprint + integer(serial) + generalized_time(gen_time)
                       + self.extras + (integer(nonce) if nonce is not None else b"") + self.tsa)
        digest = hashlib.new(self.digest, tst_info).digest()
        attrs = list(self.constant_attrs)
        attrs.append(tlv(0x30, _MESSAGE_DIGEST_OID + tlv(0x31, tlv(0x04, digest))))
        if with_signing_time:
            attrs.append(tlv(0x30, _SIGNING_TIME_OID + tlv(0x31, signing_time(gen_time))))
        content = b"".join(sorted(attrs))  # DER: a SET OF in the order of its encodings
        signed_attrs = tlv(0x31, content)
        signature = sign(key, algorithm, signed_attrs)
        signer_info = tlv(0x30, self.signer_prefix + tlv(0xA0, content) + self.signature_algorithm
                          + tlv(0x04, signature))
        encap = tlv(0x30, _TST_INFO_OID + tlv(0xA0, tlv(0x04, tst_info)))
        signed_data = tlv(0x30, b"\x02\x01\x03" + self.digest_algorithms + encap
                          + (self.certificates if cert_req else b"") + tlv(0x31, signer_info))
        return tlv(0x30, _SIGNED_DATA_OID + tlv(0xA0, signed_data)), signed_attrs, signature


def tsa_name(name: asn1_x509.GeneralName | None) -> bytes:
    """The TSTInfo's ``tsa [0] EXPLICIT GeneralName`` field, or nothing."""
    return tlv(0xA0, name.dump()) if name is not None else b""


def subject_name(cert: x509.Certificate) -> asn1_x509.GeneralName:
    return asn1_x509.GeneralName({"directory_name": asn1_x509.Name.load(cert.subject.public_bytes())})
