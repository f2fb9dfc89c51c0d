"""Distinguished names as SignServer writes and reads them.

* :func:`parse_dn` reads a Java-style DN (``CN=Signer,O=Example,C=SE``);
* :func:`format_dn` prints a name most specific RDN first, joined by ``", "`` (SignServer's form,
  used in rules, log lines, the Admin Web and the peer protocol);
* :func:`tokenized_issuer_dn` is a certificate's issuer in that form (the issuer of client rules);
* :func:`escape_dn_value` escapes an attribute value (RFC 4514) so it cannot add RDNs;
* :func:`split_unescaped` splits at a separator that is not backslash-escaped.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from signpeer_core.errors import BadRequestError


def parse_dn(dn: str) -> x509.Name:
    """A SignServer/Java style DN (``CN=Signer,O=Example,C=SE``) as an X.509 name."""
    parts = [p.strip() for p in split_unescaped(dn.strip())]
    if not dn.strip() or any("=" not in p for p in parts):
        raise BadRequestError(f"bad distinguished name '{dn}': write it as CN=Name,O=Organization,C=SE")
    try:
        return x509.Name.from_rfc4514_string(",".join(parts), {"UID": NameOID.USER_ID, "E": NameOID.EMAIL_ADDRESS,
                                                          "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
                                                          "SERIALNUMBER": NameOID.SERIAL_NUMBER,
                                                          "SN": NameOID.SURNAME, "GIVENNAME": NameOID.GIVEN_NAME,
                                                          "T": NameOID.TITLE})
    except Exception as exc:
        raise BadRequestError(
            f"bad distinguished name '{dn}': write it as CN=Name,O=Organization,C=SE "
            f"(attributes: CN, O, OU, L, ST, C, DC, UID, E, SERIALNUMBER)"
        ) from exc


def format_dn(name: x509.Name) -> str:
    """A name as SignServer prints it: most specific RDN first, joined with ``", "``."""
    parts = name.rfc4514_string({NameOID.USER_ID: "UID", NameOID.EMAIL_ADDRESS: "E",
                                 NameOID.SERIAL_NUMBER: "SERIALNUMBER"})
    return ", ".join(split_unescaped(parts))


def split_unescaped(s: str, sep: str = ",") -> list[str]:
    """``s`` split at every ``sep`` not escaped with a backslash (escapes are kept)."""
    out: list[str] = []
    cur: list[str] = []
    esc = False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def tokenized_issuer_dn(cert: x509.Certificate) -> str:
    """The issuer as SignServer writes it in rules and in the "Denied peer access" log line."""
    return format_dn(cert.issuer)


def escape_dn_value(value: str) -> str:
    """RFC 4514 escaping of an attribute value (so a value cannot add RDNs)."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)
