"""``cryptography`` private-key classes whose ``sign()`` runs inside the PKCS#11 token.

signpeer's signing code (``signpeer_core.keys.sign``, CSRs, placeholder certificates, CMS)
works on ``cryptography`` key objects. These subclasses implement ``public_key()`` and
``sign()`` by forwarding to the token, so the same code signs with HSM keys and the private
key never leaves the device. Everything that would need the key material (export, numbers,
key exchange, decryption) raises.

``cryptography``'s ``CertificateSigningRequestBuilder.sign()`` and
``CertificateBuilder.sign()`` accept such subclasses (they check ``isinstance``, call
``public_key()`` and call back into ``sign()``). That is not documented behaviour: the core
pins ``cryptography`` and ``tests/test_keys.py`` keeps a test of it.

Mechanisms, chosen to work on tokens without combined hash-and-sign mechanisms (SoftHSM2
2.6 has no ``CKM_ECDSA_SHA256``) and to avoid sending large data to the device:

* ECDSA: hash on the host, ``CKM_ECDSA`` on the digest, r‖s re-encoded as DER (:func:`ecdsa_der`);
* RSA PKCS#1 v1.5: hash on the host, ``CKM_RSA_PKCS`` on DigestInfo‖digest;
* RSA-PSS: hash on the host, ``CKM_RSA_PKCS_PSS`` with the hash, MGF1 hash and salt length;
* Ed25519: ``CKM_EDDSA`` on the message (EdDSA hashes internally).
"""

from __future__ import annotations

import functools
import hashlib
import struct
import time
from typing import Any, NoReturn, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from pkcs11 import MGF, Mechanism

#: What ``cryptography``'s key interfaces accept as data to sign.
Buffer = bytes | bytearray | memoryview


class KeySigner(Protocol):
    """What a key needs from its token: one signing operation by alias."""

    def sign_with_key(self, alias: str, mechanism: Mechanism, data: bytes, param: Any = None) -> bytes: ...


# DER DigestInfo prefixes (RFC 8017 §9.2 note 1).
_DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_HASH = {"sha1": (Mechanism.SHA_1, MGF.SHA1), "sha224": (Mechanism.SHA224, MGF.SHA224),
             "sha256": (Mechanism.SHA256, MGF.SHA256), "sha384": (Mechanism.SHA384, MGF.SHA384),
             "sha512": (Mechanism.SHA512, MGF.SHA512)}
_BY_SIZE = {20: "sha1", 28: "sha224", 32: "sha256", 48: "sha384", 64: "sha512"}
HASH_FUNCTIONS = {name: getattr(hashlib, name) for name in _DIGEST_INFO}  # skips hashlib.new's lookup per call


def ecdsa_der(raw: bytes) -> bytes:
    """The DER ``ECDSA-Sig-Value`` (RFC 3279) of a PKCS#11 ECDSA signature r‖s (two halves of the
    curve's size).

    The same bytes as ``utils.encode_dss_signature(int(r), int(s))`` (``tests/test_prepared.py``
    compares them) at a quarter of its cost: that call turns both halves into Python integers and
    back. A DER INTEGER here is the big-endian value without leading zero bytes, with one zero
    byte put back when the top bit is set.
    """
    parts = der_parts(len(raw))
    if parts is not None:
        split, table = parts
        r, s = split(raw)
        heads = table[r[0]][s[0]]
        if heads is not None:
            # The usual case (no leading zero byte in r or s), in one join: the headers made once
            # per size, with the zero byte where the top bit is set.
            head, middle = heads
            return b"".join((head, r, middle, s))
    half = len(raw) >> 1
    body = _der_integer(raw[:half]) + _der_integer(raw[half:])
    return _DER_SEQUENCE[len(body)] + body


# DER headers by content length, made once: building them per signature cost more than the rest.
_DER_INTEGER = tuple(b"\x02" + bytes((n,)) for n in range(128))
_DER_SEQUENCE = tuple(b"\x30" + (bytes((n,)) if n < 0x80 else bytes((0x81, n))) for n in range(256))


def _der_heads(half: int) -> tuple[tuple[bytes, bytes], ...]:
    """(SEQUENCE + r's INTEGER header, s's INTEGER header) for halves of ``half`` bytes without a
    leading zero byte, by (r's top bit) | (s's top bit) << 1."""
    heads = []
    for case in range(4):
        r_pad, s_pad = case & 1, case >> 1
        r_len, s_len = half + r_pad, half + s_pad
        heads.append((_DER_SEQUENCE[2 + r_len + 2 + s_len] + _DER_INTEGER[r_len] + b"\0" * r_pad,
                      _DER_INTEGER[s_len] + b"\0" * s_pad))
    return tuple(heads)


#: The DER headers of r‖s by r's and s's first bytes (:func:`_der_table`).
DerTable = tuple[tuple[tuple[bytes, bytes] | None, ...], ...]


def _der_table(half: int) -> DerTable:
    """``table[r[0]][s[0]]``: the headers of :func:`_der_heads` for halves r and s of ``half``
    bytes, found without arithmetic, or None when r or s starts with a zero byte (the general
    case). Two rows of 256 shared by the 256 first bytes of r."""
    heads = _der_heads(half)
    rows = tuple(tuple(None if s0 == 0 else heads[r_top | (s0 >> 7) << 1] for s0 in range(256)) for r_top in (0, 1))
    nothing = (None,) * 256
    return tuple(nothing if r0 == 0 else rows[r0 >> 7] for r0 in range(256))


#: (the split of r‖s into r and s: one C call that makes no slice objects; its :data:`DerTable`).
DerParts = tuple[Any, DerTable]


@functools.cache
def der_parts(length: int) -> DerParts | None:
    """The DER parts of an r‖s of ``length`` bytes (up to P-521's 2 × 66), made once per size
    when first used; None for another length. The usual case of :func:`ecdsa_der` with these is
    also written out in ``prepared.py``'s hot path."""
    half = length >> 1
    if length != 2 * half or not 1 <= half <= 66:
        return None
    return struct.Struct(f"{half}s{half}s").unpack, _der_table(half)


def _der_integer(value: bytes) -> bytes:
    """A DER INTEGER of a value with leading zero bytes: they go, but for one when the next
    byte's top bit is set (or the value is zero)."""
    value = value.lstrip(b"\0")
    if not value or value[0] > 0x7F:
        value = b"\0" + value
    return _DER_INTEGER[len(value)] + value


def _digest(data: bytes, algorithm: hashes.HashAlgorithm | utils.Prehashed) -> tuple[str, bytes]:
    """(hash name, digest): hashed here, or passed through for ``Prehashed``."""
    if isinstance(algorithm, utils.Prehashed):
        inner = getattr(algorithm, "_algorithm", None)
        name = inner.name if inner is not None else _BY_SIZE.get(algorithm.digest_size, "")
        if len(data) != algorithm.digest_size:
            raise ValueError(f"the prehashed data must be {algorithm.digest_size} bytes, got {len(data)}")
        return name, data
    name = algorithm.name
    constructor = HASH_FUNCTIONS.get(name)
    if constructor is None:
        raise UnsupportedAlgorithm(f"hash {name} is not supported by the PKCS#11 token keys; use SHA-1 or SHA-2")
    return name, constructor(data).digest()


class SignTiming:
    """How long this key's signatures take, to decide whether signing may run inline.

    The estimate is the fastest signature of each window of 32: samples taken while other
    threads held the module lock or the GIL are inflated, the minimum is not. The first
    signature sets it at once, so a slow key is known after one use.
    """

    WINDOW = 32
    __slots__ = ("estimate", "samples")  # read once per signature

    def __init__(self) -> None:
        self.estimate: float | None = None
        #: The current window's seconds; :meth:`close_window` once it holds :attr:`WINDOW`. The
        #: prepared path adds only slow signatures and empties it on a fast one (``prepared.py``).
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        samples = self.samples
        samples.append(seconds)
        if self.estimate is None:
            self.estimate = seconds
        if len(samples) >= self.WINDOW:
            self.close_window()

    def close_window(self) -> None:
        """The estimate becomes the fastest signature of the window, which starts again. What
        was taken is deleted from the front (a thread may append meanwhile)."""
        samples = self.samples
        taken = samples[:]
        if taken:
            del samples[:len(taken)]
            self.estimate = min(taken)

    def fast(self, limit: float) -> bool:
        return self.estimate is not None and self.estimate < limit


def _unextractable(what: str) -> NoReturn:
    raise TypeError(f"{what} is not available: the private key lives in the PKCS#11 token and cannot be exported")


class TokenKey:
    """The shared part: where the key lives and its public half."""

    def __init__(self, signer: KeySigner, alias: str, public: Any) -> None:
        self._signer = signer
        self.alias = alias
        self._public = public
        self.timing = SignTiming()

    def _device_sign(self, mechanism: Mechanism, data: bytes, param: Any = None) -> bytes:
        start = time.perf_counter()
        signature = self._signer.sign_with_key(self.alias, mechanism, data, param)
        self.timing.add(time.perf_counter() - start)
        return signature

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def private_bytes(self, *args: Any, **kwargs: Any) -> NoReturn:
        _unextractable("private_bytes()")


class Pkcs11ECPrivateKey(TokenKey, ec.EllipticCurvePrivateKey):
    """An EC key in the token. ``sign()`` returns a DER ECDSA signature like ``cryptography``'s."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("only ECDSA signatures are supported with EC keys")
        _, digest = _digest(bytes(data), signature_algorithm.algorithm)
        return ecdsa_der(self._device_sign(Mechanism.ECDSA, digest))

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise UnsupportedAlgorithm("signpeer's PKCS#11 keys are for signing only (no ECDH)")

    def private_numbers(self) -> NoReturn:
        _unextractable("private_numbers()")


class Pkcs11RSAPrivateKey(TokenKey, rsa.RSAPrivateKey):
    """An RSA key in the token: PKCS#1 v1.5 and PSS signatures."""

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(self, data: Buffer, padding_: padding.AsymmetricPadding,
             algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo) -> bytes:
        if isinstance(algorithm, utils.NoDigestInfo):
            raise UnsupportedAlgorithm("RSA signatures without DigestInfo are not supported by the PKCS#11 token keys")
        name, digest = _digest(bytes(data), algorithm)
        if isinstance(padding_, padding.PKCS1v15):
            return self._device_sign(Mechanism.RSA_PKCS, _DIGEST_INFO[name] + digest)
        if isinstance(padding_, padding.PSS):
            mgf = getattr(padding_, "_mgf", None)
            mgf_hash = getattr(mgf, "_algorithm", None)
            mgf_name = mgf_hash.name if mgf_hash is not None else name
            salt = getattr(padding_, "_salt_length", None)
            if salt is padding.PSS.DIGEST_LENGTH:
                salt = len(digest)
            elif salt is padding.PSS.MAX_LENGTH:
                salt = (self.key_size + 7) // 8 - len(digest) - 2
            elif not isinstance(salt, int):
                raise UnsupportedAlgorithm("PSS salt length must be a number, DIGEST_LENGTH or MAX_LENGTH")
            param = (_PSS_HASH[name][0], _PSS_HASH[mgf_name][1], salt)
            return self._device_sign(Mechanism.RSA_PKCS_PSS, digest, param)
        raise UnsupportedAlgorithm(f"RSA padding {padding_.name} is not supported for signing")

    def decrypt(self, ciphertext: bytes, padding_: padding.AsymmetricPadding) -> bytes:
        raise UnsupportedAlgorithm("signpeer's PKCS#11 keys are for signing only (no decryption)")

    def private_numbers(self) -> NoReturn:
        _unextractable("private_numbers()")


class Pkcs11Ed25519PrivateKey(TokenKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in the token (``CKM_EDDSA``)."""

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def sign(self, data: Buffer) -> bytes:
        return self._device_sign(Mechanism.EDDSA, bytes(data))

    def private_bytes_raw(self) -> NoReturn:
        _unextractable("private_bytes_raw()")


#: The wrapper of a key in the token: a ``cryptography`` private key (and a :class:`TokenKey`).
WrappedKey = Pkcs11ECPrivateKey | Pkcs11RSAPrivateKey | Pkcs11Ed25519PrivateKey


def wrap_key(signer: KeySigner, alias: str, public: Any) -> WrappedKey:
    """The right wrapper class for a public key's type."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return Pkcs11ECPrivateKey(signer, alias, public)
    if isinstance(public, rsa.RSAPublicKey):
        return Pkcs11RSAPrivateKey(signer, alias, public)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return Pkcs11Ed25519PrivateKey(signer, alias, public)
    raise TypeError(f"unsupported key type {type(public).__name__}")
