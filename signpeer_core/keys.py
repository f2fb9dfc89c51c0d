"""Keys, signature algorithms, CSRs and placeholder certificates, with SignServer's names.

Everything here works on ``cryptography`` key objects. Keys that never leave an HSM are
wrapped by their token as subclasses of ``cryptography``'s private-key interfaces, so the same
code signs, builds CSRs and builds CMS with software, HSM and one-time keys alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from signpeer_core.errors import BadRequestError, ConfigurationError
from signpeer_core.names import format_dn as format_dn  # re-exported for auth.py and rest.py (owned elsewhere)
from signpeer_core.names import parse_dn

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


#: Fixed test message of SignServer's key test (CryptoTokenHelper.testKey).
TEST_MESSAGE = b"Lillan gick pa vagen ut, motte dar en katt..."

#: Marker SignServer puts in the subject of a new key's self-signed placeholder certificate.
PLACEHOLDER_LOCALITY = "_SignServer_DUMMY_CERT_"

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1, "prime256v1": ec.SECP256R1, "p-256": ec.SECP256R1, "p256": ec.SECP256R1,
    "secp384r1": ec.SECP384R1, "p-384": ec.SECP384R1, "p384": ec.SECP384R1,
    "secp521r1": ec.SECP521R1, "p-521": ec.SECP521R1, "p521": ec.SECP521R1,
}
RSA_SIZES = (1024, 2048, 3072, 4096, 8192)


@dataclass(frozen=True)
class KeySpec:
    """A parsed KEYALG/KEYSPEC pair."""

    kind: str  # "RSA", "EC" or "Ed25519"
    bits: int = 0
    exponent: int = 65537
    curve: str = ""

    def describe(self) -> str:
        if self.kind == "RSA":
            return f"RSA {self.bits}" + ("" if self.exponent == 65537 else f" exp {self.exponent}")
        if self.kind == "EC":
            return f"EC {self.curve}"
        return self.kind


def parse_key_spec(keyalg: str, keyspec: str) -> KeySpec:
    """Parse SignServer's KEYALG/KEYSPEC (``RSA``/``2048exp5``, ``ECDSA``/``secp256r1``, ``Ed25519``)."""
    alg = keyalg.strip().upper()
    spec = keyspec.strip()
    if alg == "RSA":
        m = re.fullmatch(r"(\d+)\s*(?:exp\s*(0x[0-9a-fA-F]+|\d+))?", spec)
        if not m:
            raise BadRequestError(f"bad RSA key spec '{keyspec}': use a bit length such as 2048, or 2048exp65537")
        bits = int(m.group(1))
        if bits not in RSA_SIZES:
            raise BadRequestError(f"unsupported RSA key size {bits}; use one of {', '.join(map(str, RSA_SIZES))}")
        exponent = int(m.group(2), 0) if m.group(2) else 65537
        if exponent < 3 or exponent % 2 == 0:
            raise BadRequestError(f"bad RSA public exponent {exponent}: it must be odd and at least 3")
        return KeySpec("RSA", bits=bits, exponent=exponent)
    if alg in ("EC", "ECDSA"):
        curve = CURVES.get(spec.lower())
        if curve is None:
            raise BadRequestError(
                f"unsupported EC curve '{keyspec}'; use secp256r1 (prime256v1, P-256), secp384r1 (P-384) or secp521r1 (P-521)"
            )
        return KeySpec("EC", curve=curve().name)
    if alg in ("ED25519", "EDDSA"):
        if spec and spec.lower() not in ("ed25519", ""):
            raise BadRequestError(f"unsupported EdDSA key spec '{keyspec}'; use Ed25519")
        return KeySpec("Ed25519")
    raise BadRequestError(f"unsupported key algorithm '{keyalg}'; use RSA, ECDSA or Ed25519")


def generate_software_key(spec: KeySpec) -> PrivateKey:
    """A new key pair in memory (for the soft token and one-time software keys)."""
    if spec.kind == "RSA":
        if spec.exponent not in (3, 65537):
            # OpenSSL (through cryptography) generates only e = 3 or 65537; SignServer's KEYSPEC
            # (e.g. 2048exp5) allows any odd exponent, which pycryptodome generates.
            from Crypto.PublicKey import RSA

            der = RSA.generate(spec.bits, e=spec.exponent).export_key("DER")
            return serialization.load_der_private_key(der, None)  # type: ignore[return-value]  # RSA, made just above
        return rsa.generate_private_key(public_exponent=spec.exponent, key_size=spec.bits)
    if spec.kind == "EC":
        return ec.generate_private_key(CURVES[spec.curve]())
    return ed25519.Ed25519PrivateKey.generate()


def key_kind(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RSA"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "EC"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    raise ConfigurationError(f"unsupported key type {type(key).__name__}")


def describe_key(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """``RSA 2048``, ``EC secp256r1`` or ``Ed25519``."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}"
    return key_kind(key)


@dataclass(frozen=True)
class SignatureAlgorithm:
    """One signature algorithm by its Java/SignServer name."""

    name: str
    kind: str  # key kind: RSA, EC, Ed25519
    hash: type[hashes.HashAlgorithm] | None  # None: Ed25519, or NONEwith (data is a digest)
    pss: bool = False
    prehashed: bool = False  # NONEwith*: the request data is already a digest

    def hash_instance(self) -> hashes.HashAlgorithm | None:
        return self.hash() if self.hash else None


_HASHES = {"SHA1": hashes.SHA1, "SHA224": hashes.SHA224, "SHA256": hashes.SHA256,
           "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}
SIGNATURE_ALGORITHMS: dict[str, SignatureAlgorithm] = {}
for _h, _cls in _HASHES.items():
    for _name, _kind, _pss in ((f"{_h}withRSA", "RSA", False), (f"{_h}withRSAandMGF1", "RSA", True),
                              (f"{_h}withECDSA", "EC", False)):
        SIGNATURE_ALGORITHMS[_name.lower()] = SignatureAlgorithm(_name, _kind, _cls, _pss)
SIGNATURE_ALGORITHMS["ed25519"] = SignatureAlgorithm("Ed25519", "Ed25519", None)
SIGNATURE_ALGORITHMS["nonewithrsa"] = SignatureAlgorithm("NONEwithRSA", "RSA", None, prehashed=True)
SIGNATURE_ALGORITHMS["nonewithecdsa"] = SignatureAlgorithm("NONEwithECDSA", "EC", None, prehashed=True)


def signature_algorithm(name: str) -> SignatureAlgorithm:
    """Look up an algorithm name case-insensitively (``SHA256WithRSA`` = ``SHA256withRSA``)."""
    alg = SIGNATURE_ALGORITHMS.get(name.strip().lower())
    if alg is None:
        known = ", ".join(sorted(a.name for a in SIGNATURE_ALGORITHMS.values()))
        raise ConfigurationError(f"unknown signature algorithm '{name}'; known: {known}")
    return alg


def default_signature_algorithm(key: PrivateKey | PublicKey) -> str:
    """What SignServer's ``suggestSigAlg`` picks: SHA256withRSA, SHA256withECDSA or Ed25519."""
    return {"RSA": "SHA256withRSA", "EC": "SHA256withECDSA", "Ed25519": "Ed25519"}[key_kind(key)]


def check_algorithm_fits(alg: SignatureAlgorithm, key: PrivateKey | PublicKey) -> None:
    kind = key_kind(key)
    if alg.kind != kind:
        raise ConfigurationError(f"signature algorithm {alg.name} does not fit a {kind} key; use e.g. {default_signature_algorithm(key)}")


def _hash_of(alg: SignatureAlgorithm) -> hashes.HashAlgorithm:
    """The hash of an algorithm that has one (every one but Ed25519 and NONEwith*)."""
    if alg.hash is None:
        raise ConfigurationError(f"signature algorithm {alg.name} has no hash")
    return alg.hash()


def _rsa_padding(alg: SignatureAlgorithm) -> padding.AsymmetricPadding:
    if alg.pss:
        return padding.PSS(mgf=padding.MGF1(_hash_of(alg)), salt_length=_hash_of(alg).digest_size)
    return padding.PKCS1v15()


def _mismatch(alg: SignatureAlgorithm, key: PrivateKey | PublicKey) -> ConfigurationError:
    return ConfigurationError(f"signature algorithm {alg.name} does not fit a {type(key).__name__}")


def _kind_of(key: object) -> str:
    """"RSA", "EC", "Ed25519" or "" for a key's class, looked up once per class: the key
    classes are ABCs, whose ``isinstance`` is a Python call (``abc.__instancecheck__``)."""
    cls = type(key)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = ("Ed25519" if isinstance(key, ed25519.Ed25519PrivateKey)
                              else "RSA" if isinstance(key, rsa.RSAPrivateKey)
                              else "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "")
    return kind


_KINDS: dict[type, str] = {}


def sign(key: PrivateKey, alg: SignatureAlgorithm, data: bytes) -> bytes:
    """Sign ``data`` (a digest for ``NONEwith*``). ECDSA signatures are DER (r, s)."""
    if alg.kind == "EC" and _kind_of(key) == "EC" and not alg.prehashed:  # the usual case first
        ecdsa = _ECDSA.get(alg.name)
        if ecdsa is None:
            ecdsa = _ECDSA[alg.name] = _hashed_ecdsa(alg)
        return cast(ec.EllipticCurvePrivateKey, key).sign(ecdsa[0](data).digest(), ecdsa[1])
    if alg.kind == "Ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if alg.kind == "RSA" and isinstance(key, rsa.RSAPrivateKey):
        if alg.prehashed:
            return key.sign(data, padding.PKCS1v15(), _prehash_for(data))
        return key.sign(data, _rsa_padding(alg), _hash_of(alg))
    if alg.kind == "EC" and isinstance(key, ec.EllipticCurvePrivateKey):
        if alg.prehashed:
            return key.sign(data, ec.ECDSA(_prehash_for(data)))
        ecdsa = _ECDSA.get(alg.name)
        if ecdsa is None:
            ecdsa = _ECDSA[alg.name] = _hashed_ecdsa(alg)
        return key.sign(ecdsa[0](data).digest(), ecdsa[1])
    raise _mismatch(alg, key)


def _hashed_ecdsa(alg: SignatureAlgorithm) -> tuple[Callable[[bytes], Any], ec.ECDSA]:
    """hashlib's function of the algorithm's hash, and ``ec.ECDSA`` of its digest
    (``Prehashed``): the same signature as ``ECDSA(hash)`` over the data (OpenSSL signs the
    digest either way), with the digest made by hashlib, which costs less per call than
    cryptography's hash object."""
    digest = _hash_of(alg)
    return getattr(hashlib, digest.name), ec.ECDSA(utils.Prehashed(digest))


#: Per signature algorithm name: the hash function and ``ec.ECDSA`` (:func:`_hashed_ecdsa`),
#: made once, not per signature (immutable objects).
_ECDSA: dict[str, tuple[Callable[[bytes], Any], ec.ECDSA]] = {}


def _prehash_for(digest: bytes) -> utils.Prehashed:
    by_size = {20: hashes.SHA1(), 28: hashes.SHA224(), 32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}
    h = by_size.get(len(digest))
    if h is None:
        raise BadRequestError(f"NONEwith* signing needs a SHA-1/SHA-2 digest as data, got {len(digest)} bytes")
    return utils.Prehashed(h)


def verify(public_key: PublicKey, alg: SignatureAlgorithm, signature: bytes, data: bytes) -> None:
    """Raise :class:`cryptography.exceptions.InvalidSignature` unless the signature is good."""
    if alg.kind == "Ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    elif alg.kind == "RSA" and isinstance(public_key, rsa.RSAPublicKey):
        if alg.prehashed:
            public_key.verify(signature, data, padding.PKCS1v15(), _prehash_for(data))
        else:
            public_key.verify(signature, data, _rsa_padding(alg), _hash_of(alg))
    elif alg.kind == "EC" and isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(_prehash_for(data) if alg.prehashed else _hash_of(alg)))
    else:
        raise _mismatch(alg, public_key)


def test_key(key: PrivateKey, public_key: PublicKey | None = None) -> bool:
    """Sign SignServer's test message and verify it; True when the key pair works."""
    pub = public_key or key.public_key()
    alg = signature_algorithm(default_signature_algorithm(pub))
    try:
        verify(pub, alg, sign(key, alg, TEST_MESSAGE), TEST_MESSAGE)
    except InvalidSignature:
        return False
    return True


def csr_signature_algorithm(request_sig_alg: str, sig_alg: str, signer_cert: x509.Certificate | None) -> str:
    """SignServer's rule for the algorithm that signs a CSR (spec §2.2, RenewalUtils)."""
    if request_sig_alg.strip():
        return request_sig_alg.strip()
    if sig_alg.strip() and not sig_alg.strip().startswith("NONEwith"):
        return sig_alg.strip()
    if signer_cert is not None:
        kind = key_kind(signer_cert.public_key())
        if kind == "Ed25519":
            return "Ed25519"
        return "SHA512with" + ("ECDSA" if kind == "EC" else kind)
    return "SHA512withRSA"


def next_alias_in_sequence(alias: str) -> str:
    """``key`` → ``key2``, ``signer00001`` → ``signer00002``, ``key9`` → ``key10`` (RekeyUtil)."""
    m = re.search(r"(\d+)$", alias)
    if not m:
        return alias + "2"
    digits = m.group(1)
    return alias[: m.start()] + str(int(digits) + 1).zfill(len(digits))


def _builder_sign_args(alg_name: str, key: PrivateKey) -> dict[str, object]:
    alg = signature_algorithm(alg_name)
    check_algorithm_fits(alg, key)
    if alg.prehashed:
        raise ConfigurationError(f"{alg.name} cannot sign a CSR or certificate; set REQUESTSIGNATUREALGORITHM")
    args: dict[str, object] = {"algorithm": alg.hash_instance()}
    if alg.pss:
        args["rsa_padding"] = _rsa_padding(alg)
    return args


def build_csr(key: PrivateKey, subject_dn: str, sig_alg: str) -> x509.CertificateSigningRequest:
    """A PKCS#10 request signed by ``key`` (which may live in an HSM)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_dn(subject_dn))
    return builder.sign(key, **_builder_sign_args(sig_alg, key))  # type: ignore[arg-type]  # stubs leave out SHA-1


def placeholder_certificate(
    key: PrivateKey, alias: str, dn: str = "", validity_days: int = 30 * 365, sig_alg: str = ""
) -> x509.Certificate:
    """The self-signed certificate a new key gets, as in SignServer (``L=_SignServer_DUMMY_CERT_``)."""
    subject = parse_dn(dn or f"CN={alias}, L={PLACEHOLDER_LOCALITY}, C=SE")
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=10))
        .not_valid_after(now + dt.timedelta(days=validity_days))
    )
    return builder.sign(key, **_builder_sign_args(sig_alg or default_signature_algorithm(key), key))  # type: ignore[arg-type]  # stubs leave out SHA-1


def is_placeholder(cert: x509.Certificate) -> bool:
    """True for SignServer-style dummy certificates."""
    subject = cert.subject.rfc4514_string()
    return PLACEHOLDER_LOCALITY in subject or "CN=Dummy cert for " in subject


def public_key_der(key: PrivateKeyTypes | PublicKeyTypes | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo: the identity used to match certificates to keys."""
    # getattr, not a runtime-checkable Protocol: isinstance on one costs tens of µs, and a
    # renewal matches keys to certificates several times.
    public_key = getattr(key, "public_key", None)
    pub = cast("PublicKeyTypes", public_key() if callable(public_key) else key)
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or many) or DER; a clear error for anything else."""
    stripped = data.strip()
    if not stripped:
        raise BadRequestError("no certificate data: the file or value is empty")
    try:
        if b"-----BEGIN" in stripped:
            certs = x509.load_pem_x509_certificates(stripped)
        else:
            certs = [x509.load_der_x509_certificate(stripped)]
    except ValueError as exc:
        raise BadRequestError(f"not a PEM or DER certificate: {exc}") from exc
    if not certs:
        raise BadRequestError("no certificate found in the data")
    return certs


def certificate_pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
