"""Key specs, signature algorithms, CSR algorithm rule, alias sequence, DNs and CMS, checked
against openssl where a second opinion exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core import cms, devpki, keys
from signpeer_core.errors import BadRequestError, ConfigurationError


@pytest.mark.parametrize(
    ("alg", "spec", "expected"),
    [
        ("RSA", "2048", "RSA 2048"),
        ("rsa", "2048exp3", "RSA 2048 exp 3"),
        ("RSA", "2048exp0x10001", "RSA 2048"),
        ("ECDSA", "secp256r1", "EC secp256r1"),
        ("EC", "prime256v1", "EC secp256r1"),
        ("ECDSA", "P-384", "EC secp384r1"),
        ("ECDSA", "secp521r1", "EC secp521r1"),
        ("Ed25519", "", "Ed25519"),
    ],
)
def test_parse_key_spec(alg: str, spec: str, expected: str) -> None:
    assert keys.parse_key_spec(alg, spec).describe() == expected


@pytest.mark.parametrize(("alg", "spec"), [("RSA", "1000"), ("RSA", "abc"), ("RSA", "2048exp4"),
                                           ("ECDSA", "secp256k2"), ("DSA", "1024"), ("Ed25519", "Ed448")])
def test_parse_key_spec_rejects(alg: str, spec: str) -> None:
    with pytest.raises(BadRequestError):
        keys.parse_key_spec(alg, spec)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("key", "key2"), ("signer00001", "signer00002"), ("key9", "key10"), ("key099", "key100"), ("k0", "k1")],
)
def test_next_alias_in_sequence(alias: str, expected: str) -> None:
    assert keys.next_alias_in_sequence(alias) == expected


def test_csr_signature_algorithm_rule() -> None:
    # The cases SignServer's own unit tests fix (spec §2.2).
    assert keys.csr_signature_algorithm("", "SHA1withRSA", None) == "SHA1withRSA"
    assert keys.csr_signature_algorithm("", "NONEwithRSA", None) == "SHA512withRSA"
    assert keys.csr_signature_algorithm("Ed25519", "SHA512withRSA", None) == "Ed25519"
    ed = keys.generate_software_key(keys.parse_key_spec("Ed25519", ""))
    assert keys.csr_signature_algorithm("", "", keys.placeholder_certificate(ed, "e")) == "Ed25519"
    ec_key = devpki.new_key()
    assert keys.csr_signature_algorithm("", "NONEwithECDSA", keys.placeholder_certificate(ec_key, "x")) == "SHA512withECDSA"


def test_algorithm_names_are_case_insensitive() -> None:
    assert keys.signature_algorithm("sha256WITHrsa").name == "SHA256withRSA"
    with pytest.raises(ConfigurationError, match="unknown signature algorithm"):
        keys.signature_algorithm("SHA256withFoo")


def _openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)


@pytest.mark.parametrize(
    ("keyalg", "keyspec", "sigalg", "dgst"),
    [("ECDSA", "P-256", "SHA256withECDSA", "-sha256"), ("RSA", "2048", "SHA256withRSA", "-sha256"),
     ("RSA", "2048", "SHA384withRSA", "-sha384")],
)
def test_signatures_verify_with_openssl(tmp_path: Path, keyalg: str, keyspec: str, sigalg: str, dgst: str) -> None:
    key = keys.generate_software_key(keys.parse_key_spec(keyalg, keyspec))
    data = b"hello signpeer" * 50
    sig = keys.sign(key, keys.signature_algorithm(sigalg), data)
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "sig").write_bytes(sig)
    (tmp_path / "data").write_bytes(data)
    ok = _openssl("dgst", dgst, "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                  str(tmp_path / "data"))
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "data").write_bytes(data + b"!")
    bad = _openssl("dgst", dgst, "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                   str(tmp_path / "data"))
    assert bad.returncode != 0


def test_pss_and_ed25519_roundtrip() -> None:
    for keyalg, spec, alg in (("RSA", "2048", "SHA256withRSAandMGF1"), ("Ed25519", "", "Ed25519")):
        key = keys.generate_software_key(keys.parse_key_spec(keyalg, spec))
        a = keys.signature_algorithm(alg)
        keys.verify(key.public_key(), a, keys.sign(key, a, b"x"), b"x")


def test_csr_verified_by_openssl(tmp_path: Path) -> None:
    key = devpki.new_key()
    csr = keys.build_csr(key, "CN=Signer 1, O=Example, C=SE", "SHA256withECDSA")
    (tmp_path / "req.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = _openssl("req", "-in", str(tmp_path / "req.pem"), "-noout", "-verify", "-subject")
    assert out.returncode == 0, out.stderr
    assert b"CN = Signer 1" in out.stdout and b"C = SE" in out.stdout


def test_bad_dn_is_a_clear_error() -> None:
    with pytest.raises(BadRequestError, match="CN=Name"):
        keys.parse_dn("not a dn")


def test_placeholder_certificate_is_recognised() -> None:
    key = devpki.new_key()
    cert = keys.placeholder_certificate(key, "signer00001")
    assert keys.is_placeholder(cert)
    assert keys.format_dn(cert.subject) == "CN=signer00001, L=_SignServer_DUMMY_CERT_, C=SE"
    assert keys.public_key_der(cert) == keys.public_key_der(key)


def test_load_certificates_errors() -> None:
    with pytest.raises(BadRequestError, match="empty"):
        keys.load_certificates(b"  ")
    with pytest.raises(BadRequestError, match="not a PEM or DER"):
        keys.load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(BadRequestError, match="not a PEM or DER"):
        keys.load_certificates(b"\x30\x03garbage")


@pytest.mark.parametrize("detached", [False, True])
@pytest.mark.parametrize(("keyalg", "keyspec", "sigalg"), [("ECDSA", "P-256", "SHA256withECDSA"),
                                                          ("RSA", "2048", "SHA256withRSA"),
                                                          ("RSA", "2048", "SHA256withRSAandMGF1")])
def test_cms_verifies_with_openssl(tmp_path: Path, detached: bool, keyalg: str, keyspec: str, sigalg: str) -> None:
    ca_key, ca_cert = devpki.make_ca("CN=Test CA, O=signpeer tests")
    key = keys.generate_software_key(keys.parse_key_spec(keyalg, keyspec))
    cert = devpki.issue(ca_key, ca_cert, "CN=CMS Signer", key.public_key(), "signer")
    data = b"content to sign\n" * 10
    der = cms.sign_cms(data, key, keys.signature_algorithm(sigalg), cert, [cert, ca_cert], detached=detached)
    (tmp_path / "ca.pem").write_bytes(devpki.cert_pem(ca_cert))
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "data").write_bytes(data)
    args = ["cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sig.der"), "-CAfile", str(tmp_path / "ca.pem"),
            "-purpose", "any"]
    if detached:
        args += ["-content", str(tmp_path / "data"), "-binary"]
    out = _openssl(*args, "-out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out").read_bytes() == data
    # A signature for other content must not verify.
    if detached:
        (tmp_path / "data").write_bytes(data + b"x")
        assert _openssl(*args).returncode != 0
    # The chain travels inside the SignedData.
    certs = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "sig.der"))
    assert certs.stdout.count(b"cert_info:") == 2


def test_cms_untrusted_ca_fails(tmp_path: Path) -> None:
    ca_key, ca_cert = devpki.make_ca("CN=Test CA")
    _, other_ca = devpki.make_ca("CN=Other CA")
    key = devpki.new_key()
    cert = devpki.issue(ca_key, ca_cert, "CN=S", key.public_key())
    der = cms.sign_cms(b"x", key, keys.signature_algorithm("SHA256withECDSA"), cert, [cert])
    (tmp_path / "ca.pem").write_bytes(devpki.cert_pem(other_ca))
    (tmp_path / "sig.der").write_bytes(der)
    out = _openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sig.der"), "-CAfile",
                   str(tmp_path / "ca.pem"), "-purpose", "any")
    assert out.returncode != 0
    assert isinstance(x509.load_pem_x509_certificate(devpki.cert_pem(cert)), x509.Certificate)


def test_cms_ed25519_signature_over_signed_attributes() -> None:
    # OpenSSL 3.0 (Debian 12) has no Ed25519 CMS support at all, so check RFC 8419's rules here:
    # the signature covers the DER SET OF signed attributes, whose message digest is SHA-512.
    import hashlib

    from asn1crypto import cms as acms

    ca_key, ca_cert = devpki.make_ca("CN=Test CA")
    key = keys.generate_software_key(keys.parse_key_spec("Ed25519", ""))
    cert = devpki.issue(ca_key, ca_cert, "CN=Ed Signer", key.public_key())
    der = cms.sign_cms(b"data", key, keys.signature_algorithm("Ed25519"), cert, [cert])
    signed = acms.ContentInfo.load(der)["content"]
    info = signed["signer_infos"][0]
    assert info["signature_algorithm"]["algorithm"].native == "ed25519"
    attrs = {a["type"].native: a["values"][0].native for a in info["signed_attrs"]}
    assert attrs["message_digest"] == hashlib.sha512(b"data").digest()
    # Signed over the attributes' universal SET OF encoding, not the [0] IMPLICIT tag they carry.
    tagged = info["signed_attrs"].dump()
    key.public_key().verify(info["signature"].native, b"\x31" + tagged[1:])


def test_rsa_key_with_uncommon_public_exponent_passes_openssl_check(tmp_path: Path) -> None:
    key = keys.generate_software_key(keys.parse_key_spec("RSA", "2048exp5"))
    assert key.public_key().public_numbers().e == 5 and key.key_size == 2048
    (tmp_path / "k.pem").write_bytes(devpki.key_pem(key))
    out = _openssl("rsa", "-check", "-noout", "-in", str(tmp_path / "k.pem"))
    assert out.returncode == 0 and b"RSA key ok" in out.stdout, out.stderr


def test_an_algorithm_for_another_key_type_is_refused() -> None:
    ec_key = devpki.new_key()
    with pytest.raises(ConfigurationError, match="SHA256withRSA does not fit"):
        keys.sign(ec_key, keys.signature_algorithm("SHA256withRSA"), b"data")
    signature = keys.sign(ec_key, keys.signature_algorithm("SHA256withECDSA"), b"data")
    with pytest.raises(ConfigurationError, match="Ed25519 does not fit"):
        keys.verify(ec_key.public_key(), keys.signature_algorithm("Ed25519"), signature, b"data")
