"""DER pieces for writing PKCS#12 files: asn1crypto's own encoder (``parser.emit``: tag and
length) over bytes, and the object identifiers the writer uses.

Building asn1crypto objects from Python values and dumping them costs milliseconds for a small
keystore (each value is converted, copied and re-tagged); the writer in :mod:`.pkcs12` instead
joins encoded pieces, most of them constant or cached. What it writes is read back by
asn1crypto's strict parser and by openssl in the tests.
"""

from __future__ import annotations

from asn1crypto import core, parser

UNIVERSAL, CONTEXT = 0, 2
PRIMITIVE, CONSTRUCTED = 0, 1


def tlv(class_: int, method: int, tag: int, content: bytes) -> bytes:
    return parser.emit(class_, method, tag, content)


def seq(*parts: bytes) -> bytes:
    """SEQUENCE (OF) of encoded parts."""
    return tlv(UNIVERSAL, CONSTRUCTED, 16, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """SET OF encoded parts, in DER order (sorted encodings)."""
    return tlv(UNIVERSAL, CONSTRUCTED, 17, b"".join(sorted(parts)))


def octets(data: bytes) -> bytes:
    return tlv(UNIVERSAL, PRIMITIVE, 4, data)


def explicit0(content: bytes) -> bytes:
    """``[0] EXPLICIT``: a constructed context tag 0 around an encoded value."""
    return tlv(CONTEXT, CONSTRUCTED, 0, content)


def implicit0(data: bytes) -> bytes:
    """``[0] IMPLICIT OCTET STRING``: a primitive context tag 0."""
    return tlv(CONTEXT, PRIMITIVE, 0, data)


def integer(value: int) -> bytes:
    return core.Integer(value).dump()


def oid(dotted: str) -> bytes:
    return core.ObjectIdentifier(dotted).dump()


NULL = core.Null().dump()
DATA = oid("1.2.840.113549.1.7.1")
ENCRYPTED_DATA = oid("1.2.840.113549.1.7.6")
SHROUDED_KEY_BAG = oid("1.2.840.113549.1.12.10.1.2")
CERT_BAG = oid("1.2.840.113549.1.12.10.1.3")
X509_CERTIFICATE = oid("1.2.840.113549.1.9.22.1")
FRIENDLY_NAME = oid("1.2.840.113549.1.9.20")
LOCAL_KEY_ID = oid("1.2.840.113549.1.9.21")
PBES2 = oid("1.2.840.113549.1.5.13")
PBKDF2 = oid("1.2.840.113549.1.5.12")
AES256_CBC = oid("2.16.840.1.101.3.4.1.42")
HMAC_SHA256 = seq(oid("1.2.840.113549.2.9"), NULL)
SHA256 = seq(oid("2.16.840.1.101.3.4.2.1"), NULL)
