"""Templates of the one-time certificate's user data, its subject alternative names and validity.

Templates (``USERNAME_PATTERN``, ``SUBJECTDN_PATTERN``, ``SUBJECTALTNAME_PATTERN``) are parsed
when the worker loads, so an unknown ``${variable}`` is a configuration error the worker
reports as OFFLINE, never a surprise at signing time. Known variables:

* ``${username}`` — the authenticated user name of the signing request (with client-certificate
  authentication and no user name: the certificate's CN);
* ``${transactionId}`` — the request's unique id;
* ``${metadata.NAME}`` (alias ``${REQUEST_METADATA.NAME}``) — a request metadata value;
* ``${JWT.claim}`` (alias ``${claim.claim}``) — a claim of the verified token the request was
  authorized with (SignServer's syntax; the JWT authorizer of ``signpeer-jwtauth`` puts them on
  the request). Nested claims by a dotted path (``${JWT.address.country}``), list elements by
  index (``${JWT.groups.0}``); claim names are case-sensitive. Claims come only from a verified
  token, never from request metadata. The claims a request's templates used travel with its
  certificate request to the CA (:attr:`CertificateRequest.claims`).

Values are *escaped* for the place they go: a user name ``Smith, O=Evil`` must not add an RDN
to the subject, so DN templates escape RFC 4514 special characters and SAN templates escape
the separators too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from signpeer_core.api import (
    MISSING_CLAIM,
    BadRequestError,
    ConfigurationError,
    claim_text,
    lookup_claim,
    parse_dn,
    split_unescaped,
)

_VAR = re.compile(r"\$\{([^}]*)\}")
_SIMPLE = {"username": "username", "transactionid": "transactionId"}
_PREFIXES = ("metadata.", "request_metadata.", "jwt.", "claim.")


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and variable names alternating."""

    prop: str
    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_variable, literal or canonical variable name)

    @property
    def variables(self) -> list[str]:
        return [v for is_var, v in self.parts if is_var]

    def fill(self, values: Callable[[str], str | None], escape: Callable[[str], str] = lambda s: s) -> str:
        """The template with every variable replaced by ``escape(value)``; a missing value is a 400."""
        out = []
        for is_var, part in self.parts:
            if not is_var:
                out.append(part)
                continue
            value = values(part)
            if value is None:
                message = getattr(values, "missing_message", None)
                raise BadRequestError(message(self.prop, part) if message else _missing_message(self.prop, part))
            out.append(escape(value))
        return "".join(out)


def _missing_message(prop: str, var: str) -> str:
    if var == "username":
        return (f"{prop} uses ${{username}} but the request has no authenticated user name; the signer "
                "must authenticate users (AUTHTYPE=USERNAME, a client certificate, or a token: AUTHTYPE=JWT)")
    if var.startswith("JWT."):
        return (f"{prop} uses ${{{var}}} but the request was not authorized with a token; the signer needs "
                "AUTHTYPE=JWT (org.signserver.server.jwtauth.JwtAuthorizer)")
    return f"{prop} uses ${{{var}}} but the request has no metadata '{var.split('.', 1)[1]}'"


def parse_template(prop: str, text: str) -> Template:
    """Parse ``text``; an unknown or malformed variable is a :class:`ConfigurationError`."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append((False, text[pos:m.start()]))
        parts.append((True, _canonical(prop, m.group(1))))
        pos = m.end()
    rest = text[pos:]
    if "${" in rest:
        raise ConfigurationError(f"{prop}: unterminated variable in '{text}' (write ${{name}})")
    if rest:
        parts.append((False, rest))
    return Template(prop, text, tuple(parts))


def _canonical(prop: str, name: str) -> str:
    raw = name.strip()
    simple = _SIMPLE.get(raw.lower())
    if simple:
        return simple
    low = raw.lower()
    for prefix in _PREFIXES:
        if low.startswith(prefix) and len(raw) > len(prefix):
            rest = raw[len(prefix):]
            return ("JWT." if prefix in ("jwt.", "claim.") else "metadata.") + rest
    raise ConfigurationError(
        f"{prop}: unknown variable ${{{raw}}}; known: ${{username}}, ${{transactionId}}, "
        "${metadata.NAME}, ${JWT.claim} (alias ${claim.claim})")


class TemplateValues:
    """The lookup :meth:`Template.fill` uses for one request; remembers the claims it gave
    (:attr:`claims_used`, path → text) so that they travel with the certificate request."""

    def __init__(self, username: str | None, transaction_id: str, metadata: Mapping[str, str],
                 claims: Mapping[str, Any] | None = None) -> None:
        self.username = username
        self.transaction_id = transaction_id
        self.meta_ci = {k.lower(): v for k, v in metadata.items()}
        self.claims = claims
        self.claims_used: dict[str, str] = {}

    def __call__(self, var: str) -> str | None:
        if var == "username":
            return self.username
        if var == "transactionId":
            return self.transaction_id
        if var.startswith("JWT."):
            path = var[4:]
            text = claim_text(lookup_claim(self.claims, path))
            if text is not None:
                self.claims_used[path] = text
            return text
        return self.meta_ci.get(var.split(".", 1)[1].lower())

    def missing_message(self, prop: str, var: str) -> str:
        if var.startswith("JWT.") and self.claims is not None:
            path = var[4:]
            value = lookup_claim(self.claims, path)
            if value is MISSING_CLAIM:
                return f"{prop} uses ${{{var}}} but the token has no claim '{path}'"
            kind = "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else "null"
            return (f"{prop} uses ${{{var}}} but the token's claim '{path}' is {kind}, not text; name one "
                    f"element (e.g. ${{JWT.{path}.0}} or ${{JWT.{path}.name}})")
        return _missing_message(prop, var)


def template_values(username: str | None, transaction_id: str, metadata: Mapping[str, str],
                    claims: Mapping[str, Any] | None = None) -> TemplateValues:
    """The lookup :meth:`Template.fill` uses for one request."""
    return TemplateValues(username, transaction_id, metadata, claims)


def escape_san_value(value: str) -> str:
    """SAN values are separated by ',' and their name form by '=': escape both (and '\\')."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


# -- subject alternative names ------------------------------------------------------------------
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
GUID_OID = ObjectIdentifier("1.3.6.1.4.1.311.25.1")
SUPPORTED_SAN_FORMS = ("rfc822Name", "dNSName", "uri", "ipaddress", "upn", "guid", "directoryName")
UNSUPPORTED_SAN_FORMS = ("krb5principal", "registeredID", "x400Address", "ediPartyName", "permanentIdentifier")
_FORMS = {f.lower(): f for f in SUPPORTED_SAN_FORMS + ("uniformResourceIdentifier", "iPAddress", "email")}
_ALIASES = {"uniformresourceidentifier": "uri", "email": "rfc822Name", "ipaddress": "ipaddress"}


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _form_of(item: str) -> tuple[str, str] | None:
    """(canonical form, raw value) of ``form=value``; None when ``item`` has no known form."""
    parts = split_unescaped(item, "=")
    if len(parts) < 2:
        return None
    name = parts[0].strip().lower()
    form = _FORMS.get(name)
    if form is None:
        return None
    return _ALIASES.get(name, form), item.split("=", 1)[1]


def parse_san(text: str) -> list[tuple[str, str]]:
    """``dNSName=a,rfc822Name=b@c`` as (form, value) pairs. ``directoryName`` takes the DN that
    follows it (its ``,O=…`` parts included). Unknown and unsupported forms are refused."""
    pairs: list[tuple[str, str]] = []
    for item in split_unescaped(text, ","):
        if not item.strip():
            continue
        known = _form_of(item.strip())
        if known is not None:
            pairs.append(known)
            continue
        name = item.split("=", 1)[0].strip()
        if pairs and pairs[-1][0] == "directoryName" and "=" in item:
            pairs[-1] = ("directoryName", pairs[-1][1] + "," + item)
            continue
        if name.lower() in {f.lower() for f in UNSUPPORTED_SAN_FORMS}:
            raise ConfigurationError(
                f"SUBJECTALTNAME_PATTERN: the name form '{name}' is not supported; supported: "
                + ", ".join(f + "=" for f in SUPPORTED_SAN_FORMS))
        raise ConfigurationError(
            f"SUBJECTALTNAME_PATTERN: '{item.strip()}' is not form=value with a known name form; use "
            + ", ".join(f + "=" for f in SUPPORTED_SAN_FORMS))
    return pairs


def general_names(text: str) -> list[x509.GeneralName]:
    """The filled SAN text as X.509 general names; a bad value is a 400 naming it."""
    names: list[x509.GeneralName] = []
    for form, raw in parse_san(text):
        value = _unescape(raw).strip()
        try:
            if form == "rfc822Name":
                names.append(x509.RFC822Name(value))
            elif form == "dNSName":
                names.append(x509.DNSName(value))
            elif form == "uri":
                names.append(x509.UniformResourceIdentifier(value))
            elif form == "ipaddress":
                names.append(x509.IPAddress(ipaddress.ip_address(value)))
            elif form == "directoryName":
                names.append(x509.DirectoryName(parse_dn(raw.strip())))
            elif form == "upn":
                names.append(x509.OtherName(UPN_OID, _der_utf8(value)))
            elif form == "guid":
                names.append(x509.OtherName(GUID_OID, _der_octets(uuid.UUID(value.strip("{}")).bytes)))
        except (ValueError, BadRequestError) as exc:
            raise BadRequestError(f"subject alternative name {form}={value!r} is not valid: {exc}") from exc
    return names


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    return b"\x0c" + _der_len(len(data)) + data


def _der_octets(data: bytes) -> bytes:
    return b"\x04" + _der_len(len(data)) + data


# -- validity -----------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^\s*(-?)([0-9]{1,9}):([0-9]{1,9}):([0-9]{1,9})\s*$", re.ASCII)


@dataclass(frozen=True)
class TimeSpec:
    """A CERTIFICATESTARTTIME/CERTIFICATEENDTIME value: absolute, or relative to the request."""

    absolute: dt.datetime | None = None
    relative: dt.timedelta | None = None

    def resolve(self, now: dt.datetime) -> dt.datetime:
        if self.absolute is not None:
            return self.absolute
        assert self.relative is not None
        return now + self.relative


def parse_time(prop: str, text: str) -> TimeSpec | None:
    """EJBCA's formats: relative ``days:hours:minutes`` (``-0:0:10`` for ten minutes back) or
    absolute ``yyyy-MM-dd HH:mm:ssZZ`` (``2027-01-31 12:00:00+01:00``; ISO 8601 also accepted,
    no zone means UTC). Empty: None (the CA decides)."""
    text = text.strip()
    if not text:
        return None
    m = _RELATIVE.match(text)
    if m:
        try:
            delta = dt.timedelta(days=int(m.group(2)), hours=int(m.group(3)), minutes=int(m.group(4)))
            delta = -delta if m.group(1) else delta
            if not 1 < (dt.datetime.now(dt.UTC) + delta).year < 9000:  # resolved at every request
                raise OverflowError
            return TimeSpec(relative=delta)
        except OverflowError:
            raise ConfigurationError(f"{prop}: '{text}' is further away than a date can be; use days:hours:minutes "
                                     "of at most a few thousand years") from None
    candidate = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)  # +0100 -> +01:00
    try:
        when = dt.datetime.fromisoformat(candidate)
    except ValueError:
        raise ConfigurationError(
            f"{prop}: '{text}' is neither days:hours:minutes (e.g. 0:1:0) nor a date such as "
            "2027-01-31 12:00:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return TimeSpec(absolute=when)
