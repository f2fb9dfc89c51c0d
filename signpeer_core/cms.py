"""CMS SignedData (RFC 5652) built with asn1crypto around any signing function.

``cryptography``'s PKCS#7 builder needs a private key it can use itself; HSM and one-time keys
only offer ``sign()``. So the structure is assembled here with asn1crypto and only the signed
attributes are handed to the key. ``openssl cms -verify`` accepts the result.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from asn1crypto import algos, cms, core
from asn1crypto import tsp as _tsp  # noqa: F401 - registers the content type tst_info (RFC 3161 tokens)
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.keys import PrivateKey, SignatureAlgorithm, sign

_DIGEST_NAMES = {"SHA1": "sha1", "SHA224": "sha224", "SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}


def _digest_name(alg: SignatureAlgorithm) -> str:
    if alg.kind == "Ed25519":
        return "sha512"  # RFC 8419: SHA-512 with Ed25519 signed attributes
    if alg.hash is None:
        raise ValueError(f"{alg.name} cannot be used for CMS; use a SHA-2 algorithm")
    return _DIGEST_NAMES[alg.hash().name.upper().replace("-", "")]


def _signature_algorithm(alg: SignatureAlgorithm, digest: str) -> algos.SignedDigestAlgorithm:
    if alg.kind == "Ed25519":
        return algos.SignedDigestAlgorithm({"algorithm": "ed25519"})
    if alg.kind == "EC":
        return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"})
    if alg.pss:
        size = hashlib.new(digest).digest_size
        return algos.SignedDigestAlgorithm({
            "algorithm": "rsassa_pss",
            "parameters": algos.RSASSAPSSParams({
                "hash_algorithm": {"algorithm": digest},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": digest}},
                "salt_length": size,
            }),
        })
    return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"})


#: id-data, the content type of plain content (what ``content_type="data"`` names).
DATA_OID = "1.2.840.113549.1.7.1"


def digest_name(alg: SignatureAlgorithm) -> str:
    """The digest (asn1crypto's name, e.g. ``sha256``) a CMS signature with ``alg`` uses."""
    return _digest_name(alg)


def sign_cms(
    data: bytes,
    key: PrivateKey,
    alg: SignatureAlgorithm,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    detached: bool = False,
    signing_time: dt.datetime | None = None,
    *,
    content_type: str = "data",
    extra_signed_attrs: list[cms.CMSAttribute] | None = None,
    include_signing_time: bool = True,
    include_certificates: bool = True,
    algorithm_protection: bool = False,
    precomputed_digest: bool = False,
) -> bytes:
    """DER ContentInfo with SignedData over ``data``, signed by ``key`` for ``certificate``.

    ``content_type``: the eContentType (a name asn1crypto knows or a dotted OID; ``tst_info`` for
    an RFC 3161 token, which is then version 3). ``extra_signed_attrs`` are added to the signed
    attributes (e.g. an ESS signing-certificate-v2); ``include_certificates`` False leaves the
    certificates out; ``algorithm_protection`` adds the CMS algorithm protection attribute
    (RFC 6211). ``precomputed_digest``: ``data`` is the digest of the content (client-side
    hashing) made with the hash of ``alg``; it becomes the messageDigest attribute and the
    signature is detached.
    """
    digest = _digest_name(alg)
    if precomputed_digest:
        if len(data) != hashlib.new(digest).digest_size:
            raise ValueError(f"a {digest} digest has {hashlib.new(digest).digest_size} bytes, not {len(data)}")
        message_digest, detached = data, True
    else:
        message_digest = hashlib.new(digest, data).digest()
    # Assembled as DER from parts (the fixed ones encoded once, by asn1crypto): building the
    # asn1crypto tree on every signature cost more than the rest of a one-time CMS signature's
    # CPU in the signing thread. The bytes are the ones asn1crypto writes for the same tree
    # (tests/test_cms_der.py compares them); certificates and names are copied as they are.
    signer_der = certificate.public_bytes(serialization.Encoding.DER)
    certs = [signer_der]
    for c in chain:
        der = c.public_bytes(serialization.Encoding.DER)
        if der not in certs:
            certs.append(der)
    parts = _parts(alg, digest, content_type)
    attrs = [parts.content_type_attr]
    if include_signing_time:
        attrs.append(_signing_time_attr(signing_time or dt.datetime.now(dt.UTC)))
    attrs.append(_tlv(0x30, _MESSAGE_DIGEST_OID + _tlv(0x31, _tlv(0x04, message_digest))))
    attrs.extend(a.dump() for a in extra_signed_attrs or ())
    if algorithm_protection:
        attrs.append(cms.CMSAttribute({"type": "cms_algorithm_protection", "values": [cms.CMSAlgorithmProtection({
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
            "signature_algorithm": _signature_algorithm(alg, digest)})]}).dump())
    attrs.sort()  # a SET OF, in DER: its elements in the order of their encodings
    attrs_content = b"".join(attrs)
    signed_der = _header(0x31, len(attrs_content)) + attrs_content
    signature = sign(key, alg, signed_der)
    issuer = asn1_x509.Certificate.load(signer_der)["tbs_certificate"]["issuer"].dump()
    signer_info = _tlv(0x30, b"".join((
        b"\x02\x01\x01",  # version v1
        _tlv(0x30, issuer + _integer(certificate.serial_number)),
        parts.digest_algorithm,
        b"\xa0" + signed_der[1:],  # the same SET, under its [0] IMPLICIT tag
        parts.signature_algorithm,
        _tlv(0x04, signature))))
    is_data = content_type in ("data", DATA_OID)
    if include_certificates:
        certs.sort()  # a SET OF too
        certificates = _tlv(0xA0, b"".join(certs))
    else:
        certificates = b""
    before = b"".join((b"\x02\x01\x01" if is_data else b"\x02\x01\x03",  # RFC 5652 §5.1
                       _tlv(0x31, parts.digest_algorithm)))
    after = certificates + _tlv(0x31, signer_info)
    content = b"" if detached else data
    # The content is copied once, into the result (a 100 MiB document is not held twice).
    octets = _header(0x04, len(content)) if not detached else b""
    explicit = _header(0xA0, len(octets) + len(content)) if not detached else b""
    encap_head = _header(0x30, len(parts.content_type) + len(explicit) + len(octets) + len(content)) \
        + parts.content_type + explicit + octets
    signed_length = len(before) + len(encap_head) + len(content) + len(after)
    signed_head = _header(0x30, signed_length)
    wrapper = _header(0xA0, len(signed_head) + signed_length)
    total = len(_SIGNED_DATA_OID) + len(wrapper) + len(signed_head) + signed_length
    return b"".join((_header(0x30, total), _SIGNED_DATA_OID, wrapper, signed_head, before, encap_head, content,
                     after))


class _Parts:
    """The DER of the parts that depend only on the algorithm and the content type."""

    __slots__ = ("content_type", "content_type_attr", "digest_algorithm", "signature_algorithm")

    def __init__(self, alg: SignatureAlgorithm, digest: str, content_type: str) -> None:
        self.content_type = cms.ContentType(content_type).dump()
        self.content_type_attr = cms.CMSAttribute({"type": "content_type", "values": [content_type]}).dump()
        self.digest_algorithm = algos.DigestAlgorithm({"algorithm": digest}).dump()
        self.signature_algorithm = _signature_algorithm(alg, digest).dump()


_PARTS: dict[tuple[str, bool, str, str], _Parts] = {}


def _parts(alg: SignatureAlgorithm, digest: str, content_type: str) -> _Parts:
    key = (alg.kind, bool(alg.pss), digest, content_type)
    parts = _PARTS.get(key)
    if parts is None:
        if len(_PARTS) > 256:  # content types come from callers: keep it bounded
            _PARTS.clear()
        parts = _PARTS[key] = _Parts(alg, digest, content_type)
    return parts


_SIGNED_DATA_OID = cms.ContentType("signed_data").dump()
_MESSAGE_DIGEST_OID = cms.CMSAttributeType("message_digest").dump()
_SIGNING_TIME_OID = cms.CMSAttributeType("signing_time").dump()


def _signing_time_attr(when: dt.datetime) -> bytes:
    """The signing-time attribute (a UTCTime, as asn1crypto writes it)."""
    if when.tzinfo is not None and 1950 <= when.year < 2050:
        value = _tlv(0x17, when.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ").encode())
    else:  # asn1crypto's encoding (or its refusal)
        value = cms.Time({"utc_time": core.UTCTime(when)}).dump()
    return _tlv(0x30, _SIGNING_TIME_OID + _tlv(0x31, value))


def _integer(value: int) -> bytes:
    if value < 0:
        return core.Integer(value).dump()
    return _tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _tlv(tag: int, contents: bytes) -> bytes:
    return _header(tag, len(contents)) + contents


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size


def signature_value(content_info: bytes) -> bytes:
    """The signature value of the (first) signer of a DER ContentInfo with SignedData: what a
    signature time-stamp covers (RFC 3161 appendix A)."""
    signed = cms.ContentInfo.load(content_info)["content"]
    return bytes(signed["signer_infos"][0]["signature"].native)


def add_signature_time_stamp(content_info: bytes, token: bytes) -> bytes:
    """``content_info`` with the time-stamp ``token`` (a DER TimeStampToken) as the first signer's
    unsigned attribute ``id-aa-signatureTimeStampToken`` (RFC 3161 appendix A, RFC 5126)."""
    info = cms.ContentInfo.load(content_info)
    signer = info["content"]["signer_infos"][0]
    attrs = [a for a in signer["unsigned_attrs"]] if signer["unsigned_attrs"].native else []
    attrs.append(cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [cms.ContentInfo.load(token)]}))
    signer["unsigned_attrs"] = cms.CMSAttributes(attrs)
    return info.dump(force=False)
