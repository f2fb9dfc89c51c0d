"""The wrapper keys: signpeer's signing, CSR and certificate code works with keys in the token.

``cryptography`` accepting subclasses of its private-key interfaces in the CSR and certificate
builders is undocumented; these tests are what tells us when an upgrade breaks it.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signpeer_core import keys
from signpeer_pkcs11token.keys import Pkcs11ECPrivateKey, Pkcs11Ed25519PrivateKey, Pkcs11RSAPrivateKey

KINDS = [("ECDSA", "secp256r1", Pkcs11ECPrivateKey, ec.EllipticCurvePrivateKey),
         ("ECDSA", "secp384r1", Pkcs11ECPrivateKey, ec.EllipticCurvePrivateKey),
         ("RSA", "2048", Pkcs11RSAPrivateKey, rsa.RSAPrivateKey),
         ("Ed25519", "Ed25519", Pkcs11Ed25519PrivateKey, ed25519.Ed25519PrivateKey)]


@pytest.fixture(scope="module")
def keyset(hsm, make_token):
    token = make_token(hsm.props())
    token.auto_activate()
    made = {}
    for keyalg, keyspec, _, _ in KINDS:
        alias = f"wrap-{keyalg}-{keyspec}"
        if alias in token.key_aliases():
            token.remove_key(alias)
        token.generate_key(alias, keyalg, keyspec)
        made[(keyalg, keyspec)] = alias
    yield token, made
    for alias in made.values():
        token.remove_key(alias)
    token.close()


@pytest.mark.parametrize(("keyalg", "keyspec", "wrapper", "iface"), KINDS)
def test_csr_builder_accepts_the_wrapper_and_openssl_verifies(keyset, tmp_path, keyalg, keyspec, wrapper, iface):
    token, made = keyset
    key = token.private_key(made[(keyalg, keyspec)])
    assert isinstance(key, wrapper) and isinstance(key, iface)
    alg = keys.default_signature_algorithm(key)
    csr = keys.build_csr(key, "CN=HSM key,O=signpeer,C=SE", alg)
    assert csr.is_signature_valid
    assert keys.public_key_der(csr.public_key()) == keys.public_key_der(key)  # type: ignore[arg-type]
    pem = tmp_path / "req.pem"
    pem.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(["openssl", "req", "-in", str(pem), "-verify", "-noout"], capture_output=True, text=True)
    assert out.returncode == 0 and "verify OK" in (out.stdout + out.stderr)


@pytest.mark.parametrize(("keyalg", "keyspec", "wrapper", "iface"), KINDS)
def test_certificate_builder_accepts_the_wrapper(keyset, keyalg, keyspec, wrapper, iface):
    token, made = keyset
    key = token.private_key(made[(keyalg, keyspec)])
    cert = keys.placeholder_certificate(key, "hsm")
    cert.verify_directly_issued_by(cert)
    assert keys.is_placeholder(cert)


SIGNATURES = [("ECDSA", "secp256r1", "SHA256withECDSA"), ("ECDSA", "secp256r1", "SHA1withECDSA"),
              ("ECDSA", "secp384r1", "SHA384withECDSA"), ("ECDSA", "secp256r1", "SHA512withECDSA"),
              ("ECDSA", "secp256r1", "NONEwithECDSA"),
              ("RSA", "2048", "SHA256withRSA"), ("RSA", "2048", "SHA512withRSA"), ("RSA", "2048", "SHA1withRSA"),
              ("RSA", "2048", "SHA256withRSAandMGF1"), ("RSA", "2048", "SHA384withRSAandMGF1"),
              ("RSA", "2048", "NONEwithRSA"), ("Ed25519", "Ed25519", "Ed25519")]


@pytest.mark.parametrize(("keyalg", "keyspec", "alg_name"), SIGNATURES)
def test_signatures_verify_with_the_public_key(keyset, keyalg, keyspec, alg_name):
    token, made = keyset
    key = token.private_key(made[(keyalg, keyspec)])
    alg = keys.signature_algorithm(alg_name)
    data = b"signpeer " * 100
    if alg.prehashed:
        data = hashlib.sha256(data).digest()
    sig = keys.sign(key, alg, data)  # type: ignore[arg-type]
    keys.verify(key.public_key(), alg, sig, data)  # type: ignore[arg-type]
    assert keys.test_key(key)  # type: ignore[arg-type]


def test_key_material_cannot_leave_the_token(keyset):
    token, made = keyset
    key = token.private_key(made[("ECDSA", "secp256r1")])
    with pytest.raises(TypeError, match="cannot be exported"):
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(TypeError):
        key.private_numbers()


def test_certificate_issued_by_a_ca_key_in_the_token(keyset):
    """A CA key in the HSM can sign certificates through cryptography's builder too."""
    import datetime as dt

    token, made = keyset
    ca = token.private_key(made[("ECDSA", "secp256r1")])
    subject_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=HSM CA")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=leaf")).issuer_name(name)
            .public_key(subject_key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(ca, hashes.SHA256()))  # type: ignore[arg-type]
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]


def test_a_public_key_that_reads_back_empty_is_a_token_error_not_a_crash() -> None:
    """SoftHSM2's file store can hand back a new public key with empty attributes while another
    process rewrites the token (seen with pkcs11-tool listing objects during one-time signing):
    that is a 503 token error the generation retries once, never a ValueError (a 500)."""
    from pkcs11 import Attribute, KeyType

    from signpeer_core.api import CryptoTokenOfflineError
    from signpeer_pkcs11token.lookup import UnreadablePublicKeyError, _public_from_object

    class HalfWritten:  # what python-pkcs11 returns: attributes by index, here read back empty
        key_type = KeyType.EC

        def __getitem__(self, attribute: Attribute) -> bytes:
            return b""

    with pytest.raises(UnreadablePublicKeyError, match="unreadable public key for 'onetime-1'") as caught:
        _public_from_object(HalfWritten(), "onetime-1")
    assert isinstance(caught.value, CryptoTokenOfflineError) and caught.value.status == 503
