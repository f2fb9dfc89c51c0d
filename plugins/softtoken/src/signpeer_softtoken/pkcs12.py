"""Multi-key PKCS#12 (RFC 7292) keystores: one file, one password, one entry per alias.

``cryptography`` writes and reads PKCS#12 with exactly one private key per file, but a
SignServer keystore holds several keys (``signer00001``, ``signer00002``, …) and Java's
``keytool``, OpenSSL and SignServer all read multi-key PKCS#12. So the container is assembled
here with ``asn1crypto``, and every cryptographic step uses ``cryptography`` primitives:

* each private key is a ``pkcs8ShroudedKeyBag`` (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC),
  with the alias as ``friendlyName`` and a ``localKeyId`` shared with its certificate;
* all certificates (each key's chain, leaf first) are in one PBES2-encrypted ``SafeContents``;
  CA certificates shared by several chains are stored once;
* the whole ``AuthenticatedSafe`` is protected by an HMAC-SHA256 MAC (RFC 7292 appendix B KDF).

Iteration counts follow Java ``keytool``'s defaults (10 000), which keytool, OpenSSL 3 and
``cryptography.load_pkcs12`` read. Reading also accepts PBES2 with AES-128/192/256 or 3DES,
PKCS#12's own PBE schemes (3DES, and RC2-40/RC2-128/RC4 through pycryptodome: the certificates
of keystores made by older Java keytool and of SignServer's test keystores are RC2-40) and
SHA-1/SHA-2 MACs; a keystore is always written back in PBES2/AES.

Bags this module does not model (trusted-certificate entries, secret bags, CRLs) are kept
verbatim and written back, so rewriting a keystore made by another tool loses nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from asn1crypto import algos, core
from asn1crypto import pkcs12 as asn1_p12
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_p12

from signpeer_core.api import (
    ConfigurationError,
    CryptoTokenAuthenticationError,
    PrivateKey,
    SignpeerError,
    build_chain,
    public_key_der,
)
from signpeer_softtoken import der

#: PBKDF2 and MAC iterations: Java keytool's defaults for PKCS#12 (JDK 12+).
DEFAULT_ITERATIONS = 10_000

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


class KeystoreError(SignpeerError):
    """Base of the errors of this module (the token re-raises them with the worker's name)."""


class KeystoreFormatError(KeystoreError, ConfigurationError):
    """The data is not a PKCS#12 keystore this module can read (damaged, or an unknown scheme)."""


class KeystorePasswordError(KeystoreError, CryptoTokenAuthenticationError):
    """The password is wrong: the integrity check (MAC) or the decryption failed."""


class _UnsupportedScheme(KeystoreError):
    """An encryption scheme we do not implement (internal: triggers the fallback reader)."""


@dataclass
class KeyEntry:
    """One private-key entry: the alias, the key and its certificate chain (leaf first)."""

    alias: str
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)
    #: (password, iterations, DER EncryptedPrivateKeyInfo) of ``key`` as last written or read: a rewrite of
    #: the keystore reuses it instead of encrypting every key again.
    encrypted: tuple[str, int, bytes] | None = field(default=None, repr=False, compare=False)

    def copy(self) -> KeyEntry:
        """Another entry for the same key (its chain a new list), keeping the encrypted form."""
        return KeyEntry(self.alias, self.key, list(self.chain), self.encrypted)


@dataclass
class Keystore:
    """The decoded content of a keystore file."""

    entries: dict[str, KeyEntry] = field(default_factory=dict)
    #: DER SafeBags we do not interpret (trusted certificates, secret bags, ...), kept as they are.
    other_bags: list[bytes] = field(default_factory=list)
    #: What :func:`load_keystore` decoded each bag of this keystore into, for the next read of the
    #: same keystore (``known``): a rewrite by another process keeps most bags byte for byte.
    decoded: DecodedBags | None = field(default=None, repr=False, compare=False)


class _KeyBag(NamedTuple):
    """A key bag decoded. ``public``: the public key's DER, None when the bag was written here
    (computed when matched)."""

    name: str | None  # friendlyName
    local_id: bytes | None  # localKeyId
    key: PrivateKey
    encrypted: tuple[str, int, bytes] | None  # as KeyEntry.encrypted
    public: bytes | None


class _CertBag(NamedTuple):
    """An X.509 certificate bag decoded. ``public``: as :class:`_KeyBag`'s, or None when the key
    does not load."""

    name: str | None
    local_id: bytes | None
    certificate: x509.Certificate
    public: bytes | None


@dataclass
class DecodedBags:
    """The bags of one keystore as decoded with ``password`` (or as written with it:
    :func:`dump_keystore`), by the SHA-256 of each bag's DER."""

    password: str
    by_digest: dict[bytes, _KeyBag | _CertBag] = field(default_factory=dict)
    #: The chains' signature checks (:func:`build_chain`), for the certificates of this keystore.
    verified: dict[tuple[x509.Certificate, x509.Certificate], bool] = field(default_factory=dict)


# -- key derivation -----------------------------------------------------------------------------
def _bmp_password(password: str) -> bytes:
    """RFC 7292 B.1: BMPString, big-endian, with a two-byte NUL terminator (as OpenSSL and Java)."""
    return (password + "\0").encode("utf-16-be")


def pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, purpose: int, iterations: int, length: int) -> bytes:
    """RFC 7292 appendix B.2 key derivation (purpose 1: key, 2: IV, 3: MAC key).

    Needed for the MAC and the legacy PKCS#12 PBE schemes; ``cryptography`` exposes no API for it.
    """
    ctor = getattr(hashlib, hash_name)
    v = ctor().block_size
    u = ctor().digest_size

    def fill(data: bytes) -> bytes:
        if not data:
            return b""
        n = v * ((len(data) + v - 1) // v)
        return (data * (n // len(data) + 1))[:n]

    d = bytes([purpose]) * v
    i = bytearray(fill(salt) + fill(password))
    out = b""
    while True:
        a = ctor(d + bytes(i)).digest()
        for _ in range(iterations - 1):
            a = ctor(a).digest()
        out += a
        if len(out) >= length:
            return out[:length]
        b = int.from_bytes((a * (v // u + 1))[:v], "big")
        modulus = 1 << (8 * v)
        for j in range(0, len(i), v):
            block = (int.from_bytes(i[j:j + v], "big") + b + 1) % modulus
            i[j:j + v] = block.to_bytes(v, "big")


# Why salts are per process and derived keys cached: every key generation re-reads and rewrites
# the keystore, and each derivation costs 10,000 hash rounds (the MAC's in pure Python, holding
# the GIL): three of them made one renewal cost ~17 ms of server CPU. A salt drawn once per
# process still defeats precomputed tables; AES-CBC keeps a fresh random IV per encryption.
_PROCESS_SALT = os.urandom(16)


@functools.lru_cache(maxsize=256)
def _mac_key(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    return pkcs12_kdf(hash_name, _bmp_password(password), salt, 3, iterations, getattr(hashlib, hash_name)().digest_size)


@functools.lru_cache(maxsize=256)
def _pbkdf2_key(prf: str, length: int, salt: bytes, iterations: int, password: str) -> bytes:
    return PBKDF2HMAC(_HASHES[prf](), length, salt, iterations).derive(password.encode("utf-8"))


def _mac(hash_name: str, password: str, salt: bytes, iterations: int, data: bytes) -> bytes:
    return hmac.new(_mac_key(hash_name, password, salt, iterations), data, hash_name).digest()


# -- encryption ---------------------------------------------------------------------------------
def _pbes2(salt: bytes, iterations: int, iv: bytes) -> bytes:
    """The DER AlgorithmIdentifier of PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC."""
    return der.seq(der.PBES2, der.seq(
        der.seq(der.PBKDF2, der.seq(der.octets(salt), der.integer(iterations), der.HMAC_SHA256)),
        der.seq(der.AES256_CBC, der.octets(iv))))


def _pbes2_encrypt(plaintext: bytes, password: str, iterations: int) -> tuple[bytes, bytes]:
    """(DER AlgorithmIdentifier, ciphertext): PBES2 under the process salt and a fresh IV."""
    salt, iv = _PROCESS_SALT, os.urandom(16)
    key = _pbkdf2_key("sha256", 32, salt, iterations, password)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return _pbes2(salt, iterations, iv), encryptor.update(padded) + encryptor.finalize()


def _decrypt(alg: algos.EncryptionAlgorithm, ciphertext: bytes, password: str) -> bytes:
    kdf = alg.kdf
    cipher_name = alg.encryption_cipher
    if kdf == "pbkdf2":
        prf = alg.kdf_hmac
        if prf not in _HASHES:
            raise _UnsupportedScheme(f"PBKDF2 with {prf}")
        key = _pbkdf2_key(prf, alg.key_length, alg.kdf_salt, alg.kdf_iterations, password)
        iv = alg.encryption_iv
    elif kdf == "pkcs12_kdf" and alg["algorithm"].native in _LEGACY_PBE:
        return _decrypt_legacy_pbe(alg, ciphertext, password)
    else:
        raise _UnsupportedScheme(str(alg["algorithm"].native))
    if cipher_name == "aes" and alg.encryption_mode == "cbc":
        algorithm: algorithms.AES | TripleDES = algorithms.AES(key)
    elif cipher_name == "tripledes" and alg.encryption_mode == "cbc":
        algorithm = TripleDES(key)
    else:
        raise _UnsupportedScheme(f"{cipher_name} {alg.encryption_mode}")
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithm.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise KeystorePasswordError("decryption failed (wrong password)") from None


#: PKCS#12's own PBE schemes (RFC 7292 appendix C): name -> (cipher, key bytes). Java keytool
#: before JDK 12 and SignServer's test keystores encrypt certificates with RC2-40; RC2 and RC4
#: come from pycryptodome (``cryptography`` has neither), 3DES from ``cryptography``.
_LEGACY_PBE: dict[str, tuple[str, int]] = {
    "pkcs12_sha1_tripledes_3key": ("tripledes", 24), "pkcs12_sha1_tripledes_2key": ("tripledes", 16),
    "pkcs12_sha1_rc2_40": ("rc2", 5), "pkcs12_sha1_rc2_128": ("rc2", 16),
    "pkcs12_sha1_rc4_40": ("rc4", 5), "pkcs12_sha1_rc4_128": ("rc4", 16),
}


def _decrypt_legacy_pbe(alg: algos.EncryptionAlgorithm, ciphertext: bytes, password: str) -> bytes:
    """Decrypt with one of :data:`_LEGACY_PBE` (keys and IV from the PKCS#12 KDF with SHA-1)."""
    from Crypto.Cipher import ARC2, ARC4

    cipher, length = _LEGACY_PBE[alg["algorithm"].native]
    bmp = _bmp_password(password)
    salt, iterations = alg.kdf_salt, alg.kdf_iterations
    key = pkcs12_kdf("sha1", bmp, salt, 1, iterations, length)
    if cipher == "rc4":
        return ARC4.new(key).decrypt(ciphertext)  # a stream cipher: no padding, the MAC proves the password
    iv = pkcs12_kdf("sha1", bmp, salt, 2, iterations, 8)
    if cipher == "rc2":
        padded = ARC2.new(key, ARC2.MODE_CBC, iv=iv, effective_keylen=length * 8).decrypt(ciphertext)
    else:
        if length == 16:  # two-key 3DES: K1 K2 K1
            key = key + key[:8]
        decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(64).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise KeystorePasswordError("decryption failed (wrong password)") from None


# -- writing ------------------------------------------------------------------------------------
# The file is assembled from DER pieces with asn1crypto's own encoder (``parser.emit``, tag and
# length) rather than by building asn1crypto objects from Python values: building and dumping
# those cost ~20 ms for a keystore of two keys, most of a renewal's server time. Each key's
# encrypted bag is kept with its entry (:attr:`KeyEntry.encrypted`), so a rewrite encrypts only
# what changed (see :mod:`.der`).


def _attributes(alias: str | None, local_key_id: bytes | None) -> bytes:
    """The bag's SET OF attributes (friendlyName, localKeyId), or nothing."""
    attrs = []
    if alias is not None:
        attrs.append(der.seq(der.FRIENDLY_NAME, der.set_of(core.BMPString(alias).dump())))
    if local_key_id is not None:
        attrs.append(der.seq(der.LOCAL_KEY_ID, der.set_of(der.octets(local_key_id))))
    return der.set_of(*attrs) if attrs else b""


def _cert_bag(cert_der: bytes, attrs: bytes) -> bytes:
    value = der.seq(der.X509_CERTIFICATE, der.explicit0(der.octets(cert_der)))
    return der.seq(der.CERT_BAG, der.explicit0(value), attrs)


def _encrypted_key(entry: KeyEntry, password: str, iterations: int) -> bytes:
    """The entry's EncryptedPrivateKeyInfo (DER), encrypted once per key and password."""
    cached = entry.encrypted
    if cached is not None and cached[:2] == (password, iterations):
        return cached[2]
    pkcs8 = entry.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    alg, ciphertext = _pbes2_encrypt(pkcs8, password, iterations)
    encoded = der.seq(alg, der.octets(ciphertext))
    entry.encrypted = (password, iterations, encoded)
    return encoded


def dump_keystore(keystore: Keystore | Iterable[KeyEntry], password: str,
                  iterations: int = DEFAULT_ITERATIONS) -> bytes:
    """The DER bytes of a PKCS#12 file holding every entry, protected by ``password``. A
    :class:`Keystore` gets the bags written as its :attr:`Keystore.decoded`: a later re-read of
    the file, rewritten by another process, need not decode them."""
    decoded = DecodedBags(password)
    if isinstance(keystore, Keystore):
        entries, other = list(keystore.entries.values()), keystore.other_bags
        keystore.decoded = decoded
    else:
        entries, other = list(keystore), []
    key_bags: list[bytes] = []
    cert_bags: list[bytes] = []
    used_ids: set[bytes] = set()
    written: set[bytes] = set()
    leaves = {e.chain[0].public_bytes(serialization.Encoding.DER) for e in entries if e.chain}
    for entry in entries:
        leaf_der = entry.chain[0].public_bytes(serialization.Encoding.DER) if entry.chain else b""
        # localKeyId ties the key to its certificate; OpenSSL uses the leaf's SHA-1. Keep it unique.
        local_id = hashlib.sha1(leaf_der or b"alias:" + entry.alias.encode()).digest()
        if local_id in used_ids:
            local_id = hashlib.sha1(b"alias:" + entry.alias.encode() + leaf_der).digest()
        used_ids.add(local_id)
        attrs = _attributes(entry.alias, local_id)
        key = der.explicit0(_encrypted_key(entry, password, iterations))
        key_bags.append(der.seq(der.SHROUDED_KEY_BAG, key, attrs))
        decoded.by_digest[_digest(key_bags[-1])] = _KeyBag(entry.alias, local_id, entry.key, entry.encrypted, None)
        if entry.chain:
            cert_bags.append(_cert_bag(leaf_der, attrs))
            decoded.by_digest[_digest(cert_bags[-1])] = _CertBag(entry.alias, local_id, entry.chain[0], None)
            written.add(leaf_der)
        for ca in entry.chain[1:]:
            ca_der = ca.public_bytes(serialization.Encoding.DER)
            if ca_der not in written and ca_der not in leaves:
                cert_bags.append(_cert_bag(ca_der, b""))
                decoded.by_digest[_digest(cert_bags[-1])] = _CertBag(None, None, ca, None)
                written.add(ca_der)
    alg, encrypted = _pbes2_encrypt(der.seq(*cert_bags, *other), password, iterations)
    encrypted_info = der.seq(der.DATA, alg, der.implicit0(encrypted))
    auth_safe = der.seq(
        der.seq(der.ENCRYPTED_DATA, der.explicit0(der.seq(der.integer(0), encrypted_info))),
        der.seq(der.DATA, der.explicit0(der.octets(der.seq(*key_bags)))),
    )
    salt = _PROCESS_SALT
    mac_data = der.seq(der.seq(der.SHA256, der.octets(_mac("sha256", password, salt, iterations, auth_safe))),
                       der.octets(salt), der.integer(iterations))
    return der.seq(der.integer(3), der.seq(der.DATA, der.explicit0(der.octets(auth_safe))), mac_data)


# -- reading ------------------------------------------------------------------------------------
def _bag_attrs(bag: asn1_p12.SafeBag) -> tuple[str | None, bytes | None]:
    name: str | None = None
    local_id: bytes | None = None
    attrs = bag["bag_attributes"]
    if attrs.native is None:
        return None, None
    for attr in attrs:
        kind = attr["type"].native
        if kind == "friendly_name" and len(attr["values"]):
            name = attr["values"][0].native
        elif kind == "local_key_id" and len(attr["values"]):
            local_id = attr["values"][0].native
    return name, local_id


def _digest(bag: bytes) -> bytes:
    return hashlib.sha256(bag).digest()


def _flatten(contents: asn1_p12.SafeContents, known: dict[bytes, _KeyBag | _CertBag]) -> list[tuple[bytes, asn1_p12.SafeBag]]:
    """The bags (with the SHA-256 of their DER) of ``contents`` and of the SafeContents nested in it.
    A bag found in ``known`` is not parsed."""
    out = []
    for bag in contents:
        digest = _digest(bag.dump())
        if digest not in known and bag["bag_id"].native == "safe_contents":
            out.extend(_flatten(bag["bag_value"], known))
        else:
            out.append((digest, bag))
    return out


def _read_shrouded_key(info: asn1_p12.SafeBag, password: str, has_mac: bool,
                       name: str | None) -> tuple[PrivateKey, tuple[str, int, bytes] | None]:
    """A ``pkcs8ShroudedKeyBag``'s key, and its encrypted form when a rewrite may keep it (PBES2
    with AES, as this module writes). PBES2 is decrypted here, with the derived key cached
    (:func:`_pbkdf2_key`): keys written by one process share its salt, so reading a keystore of
    several keys, or many keystores, derives once instead of once per key."""
    der = info.untag().dump()
    alg = info["encryption_algorithm"]
    try:
        ours = alg.kdf == "pbkdf2" and alg.kdf_hmac in _HASHES and alg.encryption_cipher == "aes" \
            and alg.encryption_mode == "cbc"
    except ValueError:  # an algorithm asn1crypto does not know: OpenSSL may
        ours = False
    try:
        if ours:
            plain = _decrypt(alg, info["encrypted_data"].native, password)
            key = serialization.load_der_private_key(plain, None)
        else:
            key = serialization.load_der_private_key(der, password.encode("utf-8"))
    except (ValueError, KeystorePasswordError) as exc:
        if has_mac:  # the password is right, so the bag itself is bad
            raise KeystoreFormatError(f"cannot decrypt the key '{name}': {exc}") from exc
        raise KeystorePasswordError("cannot decrypt the keys: wrong password") from exc
    except TypeError as exc:
        raise KeystoreFormatError(f"cannot read the key '{name}': {exc}") from exc
    return key, ((password, alg.kdf_iterations, der) if ours else None)  # type: ignore[return-value]  # any key type is kept as stored


def load_keystore(data: bytes, password: str, known: Keystore | None = None) -> Keystore:
    """Decode a PKCS#12 file. :class:`KeystorePasswordError` for a wrong password,
    :class:`KeystoreFormatError` for anything that is not a readable keystore.

    ``known``: a keystore this caller decoded before (an earlier version of the same file). The
    whole file is still checked (its MAC, the decryption of its certificates), but a bag found in
    it byte for byte, under the same password, is not decoded again: when another process adds a
    key, a re-read decodes that key and its certificate only."""
    try:
        return _load(data, password, known.decoded if known is not None else None)
    except _UnsupportedScheme as exc:
        return _load_single_key_fallback(data, password, str(exc))
    except KeystoreError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise KeystoreFormatError(f"not a valid PKCS#12 keystore ({exc})") from exc


def _load(data: bytes, password: str, known: DecodedBags | None = None) -> Keystore:
    if not data:
        raise KeystoreFormatError("the file is empty")
    pfx = asn1_p12.Pfx.load(data, strict=True)
    if pfx["version"].native != "v3":
        raise KeystoreFormatError(f"unsupported PKCS#12 version {pfx['version'].native}")
    outer = pfx["auth_safe"]
    if outer["content_type"].native != "data":
        raise KeystoreFormatError("PKCS#12 files signed with a public key are not supported")
    auth_bytes = outer["content"].native
    mac_data = pfx["mac_data"]
    has_mac = mac_data.native is not None
    if has_mac:
        hash_name = mac_data["mac"]["digest_algorithm"]["algorithm"].native
        if hash_name not in _HASHES:
            raise KeystoreFormatError(f"unsupported PKCS#12 MAC algorithm {hash_name}")
        expected = _mac(hash_name, password, mac_data["mac_salt"].native, mac_data["iterations"].native, auth_bytes)
        if not hmac.compare_digest(expected, mac_data["mac"]["digest"].native):
            raise KeystorePasswordError("the integrity check (MAC) failed: wrong password")
    usable = known is not None and known.password == password
    cache = known.by_digest if known is not None and usable else {}
    bags: list[tuple[bytes, asn1_p12.SafeBag]] = []
    for content_info in asn1_p12.AuthenticatedSafe.load(auth_bytes):
        kind = content_info["content_type"].native
        if kind == "data":
            bags.extend(_flatten(asn1_p12.SafeContents.load(content_info["content"].native), cache))
        elif kind == "encrypted_data":
            eci = content_info["content"]["encrypted_content_info"]
            plain = _decrypt(eci["content_encryption_algorithm"], eci["encrypted_content"].native or b"", password)
            try:
                bags.extend(_flatten(asn1_p12.SafeContents.load(plain), cache))
            except ValueError:
                if has_mac:
                    raise
                # Without a MAC a wrong password can still pass the padding check (1 in 256).
                raise KeystorePasswordError("decryption failed (wrong password)") from None
        else:
            raise KeystoreFormatError(f"unsupported PKCS#12 content type {kind}")

    decoded = DecodedBags(password)
    keys: list[_KeyBag] = []
    certs: list[tuple[_CertBag, asn1_p12.SafeBag]] = []
    other: list[bytes] = []
    for digest, bag in bags:
        item = cache.get(digest) or _decode_bag(bag, password, has_mac)
        if item is None:
            other.append(bag.dump())
            continue
        decoded.by_digest[digest] = item
        if isinstance(item, _KeyBag):
            keys.append(item)
        else:
            certs.append((item, bag))

    store = Keystore(decoded=decoded)
    used: set[int] = set()
    pool = [c.certificate for c, _ in certs]
    verified = dict(known.verified) if known is not None and usable else {}
    for index, (name, local_id, key, encrypted, key_pub) in enumerate(keys, start=1):
        pub = key_pub if key_pub is not None else public_key_der(key.public_key())
        leaf_at = None
        for i, ((_, cert_id, cert, cert_pub), _) in enumerate(certs):
            if (cert_pub if cert_pub is not None else public_key_der(cert)) != pub:
                continue
            if local_id is not None and cert_id == local_id:
                leaf_at = i
                break
            if leaf_at is None:
                leaf_at = i
        chain: list[x509.Certificate] = []
        alias = name
        if leaf_at is not None:
            used.add(leaf_at)
            cert_name = certs[leaf_at][0].name
            alias = alias or cert_name
            chain = build_chain(certs[leaf_at][0].certificate, pool, verified)
        alias = alias or f"key{index}"
        if alias in store.entries:
            raise KeystoreFormatError(f"the alias '{alias}' is used by two keys")
        store.entries[alias] = KeyEntry(alias, key, chain, encrypted)
    for i, ((name, _, _, _), bag) in enumerate(certs):
        # CA certificates are rebuilt from the chains on writing; named ones (trusted-certificate
        # entries of a Java keystore) are kept as they are so that a rewrite loses nothing.
        if i not in used and name is not None:
            other.append(bag.dump())
    store.other_bags = other
    in_pool = set(pool)
    decoded.verified = {pair: ok for pair, ok in verified.items() if pair[0] in in_pool and pair[1] in in_pool}
    return store


def _decode_bag(bag: asn1_p12.SafeBag, password: str, has_mac: bool) -> _KeyBag | _CertBag | None:
    """A key or X.509 certificate bag decoded; None for a bag kept as it is (:attr:`Keystore.other_bags`)."""
    bag_id = bag["bag_id"].native
    name, local_id = _bag_attrs(bag)
    if bag_id == "pkcs8_shrouded_key_bag":
        key, encrypted = _read_shrouded_key(bag["bag_value"], password, has_mac, name)
        return _KeyBag(name, local_id, key, encrypted, public_key_der(key.public_key()))
    if bag_id == "key_bag":
        plain: PrivateKey = serialization.load_der_private_key(bag["bag_value"].untag().dump(), None)  # type: ignore[assignment]  # kept as stored
        return _KeyBag(name, local_id, plain, None, public_key_der(plain.public_key()))
    if bag_id == "cert_bag" and bag["bag_value"]["cert_id"].native == "x509":
        cert = x509.load_der_x509_certificate(bag["bag_value"]["cert_value"].parsed.dump())
        try:
            pub: bytes | None = public_key_der(cert)
        except Exception:  # a key type cryptography cannot load: matched (and failing) only if a key is there
            pub = None
        return _CertBag(name, local_id, cert, pub)
    return None


def _load_single_key_fallback(data: bytes, password: str, scheme: str) -> Keystore:
    """Read a file whose certificates use a scheme we do not implement, through ``cryptography``.

    ``cryptography`` returns one key per file, so this only serves files with a single key.
    """
    pfx = asn1_p12.Pfx.load(data, strict=True)
    key_bags = 0
    for content_info in asn1_p12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
        if content_info["content_type"].native == "data":
            for _, bag in _flatten(asn1_p12.SafeContents.load(content_info["content"].native), {}):
                key_bags += bag["bag_id"].native in ("pkcs8_shrouded_key_bag", "key_bag")
    if key_bags > 1:
        raise KeystoreFormatError(
            f"the certificates are encrypted with {scheme}, which signpeer reads only for keystores with "
            f"one key; convert the keystore to PBES2/AES (e.g. keytool -importkeystore with JDK 12 or later)")
    try:
        loaded = crypto_p12.load_pkcs12(data, password.encode("utf-8"))
    except ValueError as exc:
        raise KeystorePasswordError(f"cannot decrypt the keystore: wrong password ({exc})") from exc
    store = Keystore()
    if loaded.key is not None:
        pool = [c.certificate for c in loaded.additional_certs]
        chain: list[x509.Certificate] = []
        alias = None
        if loaded.cert is not None:
            alias = loaded.cert.friendly_name.decode("utf-8", "replace") if loaded.cert.friendly_name else None
            chain = build_chain(loaded.cert.certificate, pool)
        alias = alias or "key1"
        store.entries[alias] = KeyEntry(alias, loaded.key, chain)  # type: ignore[arg-type]  # kept as stored
    return store
