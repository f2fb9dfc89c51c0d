"""CMS SignedData (RFC 5652) built with asn1crypto around any signing function.

``cryptography``'s PKCS#7 builder needs a private key it can use itself; HSM and one-time keys
only offer ``sign()``. So the structure is assembled here with asn1crypto and only the signed
attributes are handed to the key. ``openssl cms -verify`` accepts the result.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from asn1crypto import algos, cms, core
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


def sign_cms(
    data: bytes,
    key: PrivateKey,
    alg: SignatureAlgorithm,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    detached: bool = False,
    signing_time: dt.datetime | None = None,
    content_type: str = "data",
    precomputed_digest: bool = False,
) -> bytes:
    """DER ContentInfo with SignedData over ``data``, signed by ``key`` for ``certificate``.

    ``content_type``: the eContentType (a name asn1crypto knows or a dotted OID).
    ``precomputed_digest``: ``data`` is the digest of the content (client-side hashing) made
    with the hash of ``alg``; it becomes the messageDigest attribute and the signature is
    detached.
    """
    digest = _digest_name(alg)
    if precomputed_digest:
        if len(data) != hashlib.new(digest).digest_size:
            raise ValueError(f"a {digest} digest has {hashlib.new(digest).digest_size} bytes, not {len(data)}")
        message_digest, detached = data, True
    else:
        message_digest = hashlib.new(digest, data).digest()
    signer_cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    certs = [signer_cert]
    for c in chain:
        der = c.public_bytes(serialization.Encoding.DER)
        if der != certs[0].dump():
            certs.append(asn1_x509.Certificate.load(der))
    when = signing_time or dt.datetime.now(dt.UTC)
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [content_type]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": core.UTCTime(when)})]}),
        cms.CMSAttribute({"type": "message_digest", "values": [message_digest]}),
    ])
    signature = sign(key, alg, signed_attrs.dump())
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": signer_cert.issuer, "serial_number": signer_cert.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": _signature_algorithm(alg, digest),
        "signature": signature,
    })
    encap: dict[str, object] = {"content_type": content_type}
    if not detached:
        encap["content"] = data
    signed_data = cms.SignedData({
        "version": "v1" if content_type in ("data", "1.2.840.113549.1.7.1") else "v3",  # RFC 5652 §5.1
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": encap,
        "certificates": [cms.CertificateChoices({"certificate": c}) for c in certs],
        "signer_infos": [signer_info],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
