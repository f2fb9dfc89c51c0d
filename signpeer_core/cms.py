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
    # Certificates and names go in as their DER, loaded lazily: asn1crypto then copies bytes
    # instead of re-encoding (or deep-copying) parsed trees, several milliseconds per signature.
    signer_der = certificate.public_bytes(serialization.Encoding.DER)
    certs = [signer_der]
    for c in chain:
        der = c.public_bytes(serialization.Encoding.DER)
        if der not in certs:
            certs.append(der)
    when = signing_time or dt.datetime.now(dt.UTC)
    signature_algorithm = _signature_algorithm(alg, digest)
    attrs = [cms.CMSAttribute({"type": "content_type", "values": [content_type]})]
    if include_signing_time:
        attrs.append(cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": core.UTCTime(when)})]}))
    attrs.append(cms.CMSAttribute({"type": "message_digest", "values": [message_digest]}))
    attrs.extend(extra_signed_attrs or ())
    if algorithm_protection:
        attrs.append(cms.CMSAttribute({"type": "cms_algorithm_protection", "values": [cms.CMSAlgorithmProtection({
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
            "signature_algorithm": signature_algorithm})]}))
    signed_der = cms.CMSAttributes(attrs).dump()
    signature = sign(key, alg, signed_der)
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": asn1_x509.Name.load(asn1_x509.Certificate.load(signer_der)["tbs_certificate"]["issuer"].dump()),
            "serial_number": certificate.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
        # the same SET, under its [0] IMPLICIT tag (as DER, so that it is not copied and re-encoded)
        "signed_attrs": cms.CMSAttributes.load(b"\xa0" + signed_der[1:], implicit=0),
        "signature_algorithm": signature_algorithm,
        "signature": signature,
    })
    encap: dict[str, object] = {"content_type": content_type}
    is_data = content_type in ("data", DATA_OID)
    # Plain data is put in by _attach after encoding: asn1crypto keeps an encoded copy of each
    # nesting level, which made an attached signature of a 100 MiB document hold ~6 copies of it.
    attach = not detached and is_data
    if not detached and not attach:
        encap["content"] = data if is_data else core.ParsableOctetString(data)
    signed_data: dict[str, object] = {
        "version": "v1" if is_data else "v3",  # RFC 5652 §5.1
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": encap,
        "signer_infos": [signer_info],
    }
    if include_certificates:
        signed_data["certificates"] = [cms.CertificateChoices.load(der) for der in certs]
    encoded = cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)}).dump()
    return _attach(encoded, data) if attach else encoded


def _der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size


def _attach(detached: bytes, content: bytes) -> bytes:
    """The DER of ``detached`` (a ContentInfo with SignedData and no eContent) with ``content``
    as its eContent OCTET STRING, written with ``content`` copied once (into the result)."""
    info = cms.ContentInfo.load(detached)
    signed = info["content"]
    encap = signed["encap_content_info"]
    # SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo, ... }: the bytes before
    # and after encapContentInfo are kept as they are.
    inner = signed.contents
    start = len(signed["version"].dump()) + len(signed["digest_algorithms"].dump())
    old_encap = encap.dump()
    if inner[start:start + len(old_encap)] != old_encap:  # pragma: no cover - asn1crypto changed its encoding
        raise ValueError("unexpected SignedData encoding")
    before, after = inner[:start], inner[start + len(old_encap):]
    octets = _der_header(0x04, len(content))
    explicit = _der_header(0xA0, len(octets) + len(content))
    oid = encap["content_type"].dump()
    encap_length = len(oid) + len(explicit) + len(octets) + len(content)
    encap_head = _der_header(0x30, encap_length) + oid + explicit + octets
    signed_length = len(before) + len(encap_head) + len(content) + len(after)
    signed_head = _der_header(0x30, signed_length)
    content_type = info["content_type"].dump()
    wrapper = _der_header(0xA0, len(signed_head) + signed_length)
    total = len(content_type) + len(wrapper) + len(signed_head) + signed_length
    return b"".join((_der_header(0x30, total), content_type, wrapper, signed_head, before, encap_head, content,
                     after))


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
