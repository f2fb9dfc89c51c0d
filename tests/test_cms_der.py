"""``sign_cms`` assembles its DER from parts; it must be the DER asn1crypto writes for the same tree.

The reference below builds the SignedData the way ``sign_cms`` did before (an asn1crypto tree,
dumped), around the signature ``sign_cms`` made, so that randomized signatures (ECDSA, PSS)
compare too. openssl verifies the results in tests/test_keys.py and tests/test_large_documents.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from asn1crypto import algos, core
from asn1crypto import cms as acms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization

from signpeer_core import cms, devpki, keys


def _reference(data: bytes, signature: bytes, alg: keys.SignatureAlgorithm, certificate: Any, chain: list[Any],
               detached: bool, when: dt.datetime, content_type: str, extra: list[acms.CMSAttribute],
               include_signing_time: bool, include_certificates: bool, algorithm_protection: bool,
               precomputed_digest: bool) -> bytes:
    digest = cms.digest_name(alg)
    if precomputed_digest:
        message_digest, detached = data, True
    else:
        message_digest = hashlib.new(digest, data).digest()
    signature_algorithm = cms._signature_algorithm(alg, digest)
    attrs = [acms.CMSAttribute({"type": "content_type", "values": [content_type]})]
    if include_signing_time:
        attrs.append(acms.CMSAttribute({"type": "signing_time", "values": [acms.Time({"utc_time": core.UTCTime(when)})]}))
    attrs.append(acms.CMSAttribute({"type": "message_digest", "values": [message_digest]}))
    attrs.extend(extra)
    if algorithm_protection:
        attrs.append(acms.CMSAttribute({"type": "cms_algorithm_protection", "values": [acms.CMSAlgorithmProtection({
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
            "signature_algorithm": signature_algorithm})]}))
    signer_der = certificate.public_bytes(serialization.Encoding.DER)
    signer_info = acms.SignerInfo({
        "version": "v1",
        "sid": acms.SignerIdentifier({"issuer_and_serial_number": acms.IssuerAndSerialNumber({
            "issuer": asn1_x509.Certificate.load(signer_der)["tbs_certificate"]["issuer"],
            "serial_number": certificate.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
        "signed_attrs": acms.CMSAttributes(attrs),
        "signature_algorithm": signature_algorithm,
        "signature": signature,
    })
    is_data = content_type in ("data", cms.DATA_OID)
    encap: dict[str, object] = {"content_type": content_type}
    if not detached:
        encap["content"] = data if is_data else core.ParsableOctetString(data)
    signed_data: dict[str, object] = {
        "version": "v1" if is_data else "v3",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": encap,
        "signer_infos": [signer_info],
    }
    if include_certificates:
        ders = [signer_der] + [c.public_bytes(serialization.Encoding.DER) for c in chain]
        signed_data["certificates"] = [acms.CertificateChoices.load(d) for d in dict.fromkeys(ders)]
    return bytes(acms.ContentInfo({"content_type": "signed_data", "content": acms.SignedData(signed_data)}).dump())


@pytest.fixture(scope="module")
def signers() -> dict[str, tuple[Any, Any, Any]]:
    ca_key, ca_cert = devpki.make_ca("CN=DER Test CA, O=signpeer tests")
    out = {}
    for keyalg, keyspec in (("ECDSA", "P-256"), ("RSA", "2048"), ("Ed25519", "")):
        key = keys.generate_software_key(keys.parse_key_spec(keyalg, keyspec))
        out[keyalg] = (key, devpki.issue(ca_key, ca_cert, f"CN={keyalg} Signer, O=a\\, b", key.public_key()), ca_cert)
    return out


CASES = [
    ("ECDSA", "SHA256withECDSA", {}),
    ("ECDSA", "SHA384withECDSA", {"detached": True}),
    ("ECDSA", "SHA256withECDSA", {"precomputed_digest": True}),
    ("ECDSA", "SHA256withECDSA", {"content_type": "tst_info", "include_signing_time": False}),
    ("ECDSA", "SHA256withECDSA", {"content_type": "1.2.3.4.5", "include_certificates": False}),
    ("ECDSA", "SHA512withECDSA", {"algorithm_protection": True, "extra": True}),
    ("RSA", "SHA256withRSA", {}),
    ("RSA", "SHA256withRSAandMGF1", {"detached": True, "algorithm_protection": True}),
    ("Ed25519", "Ed25519", {}),
]


@pytest.mark.parametrize(("keyalg", "sigalg", "options"), CASES)
@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 70000])
def test_sign_cms_writes_the_der_asn1crypto_writes(signers: dict[str, tuple[Any, Any, Any]], keyalg: str,
                                                   sigalg: str, options: dict[str, Any], size: int) -> None:
    key, cert, ca_cert = signers[keyalg]
    alg = keys.signature_algorithm(sigalg)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    if options.get("content_type") == "tst_info":  # a DER structure (the TSA's TSTInfo), as a token holds
        data = cms._tlv(0x30, data)
    if options.get("precomputed_digest"):
        data = hashlib.new(cms.digest_name(alg), data).digest()
    when = dt.datetime(2026, 12, 2, 3, 4, 5, 678, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    extra = [acms.CMSAttribute({"type": "1.3.6.1.4.1.99999.1", "values": [core.OctetString(b"v2")]})] \
        if options.get("extra") else []
    kwargs = {k: v for k, v in options.items() if k != "extra"}
    der = cms.sign_cms(data, key, alg, cert, [cert, ca_cert, ca_cert], signing_time=when, extra_signed_attrs=extra,
                       **kwargs)
    signature = bytes(acms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native)
    expected = _reference(data, signature, alg, cert, [cert, ca_cert], kwargs.get("detached", False), when,
                          kwargs.get("content_type", "data"), extra, kwargs.get("include_signing_time", True),
                          kwargs.get("include_certificates", True), kwargs.get("algorithm_protection", False),
                          kwargs.get("precomputed_digest", False))
    assert der == expected


def test_signing_time_is_the_utc_time_of_now_by_default(signers: dict[str, tuple[Any, Any, Any]]) -> None:
    key, cert, ca_cert = signers["ECDSA"]
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    der = cms.sign_cms(b"x", key, keys.signature_algorithm("SHA256withECDSA"), cert, [cert, ca_cert])
    attrs = {a["type"].native: a["values"][0].native
             for a in acms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"]}
    assert before <= attrs["signing_time"] <= dt.datetime.now(dt.UTC)
