"""Client authentication per worker (``AUTHTYPE``): NOAUTH, CLIENTCERT and USERNAME, and the
seam for authorizers that plugins register (``signpeer_authorizer_types``).

``AUTHTYPE`` values (case-insensitive; SignServer's class names map to the same authorizers):

* ``NOAUTH``: anybody may use the worker (set it explicitly for a public worker).
* ``CLIENTCERT`` / ``org.signserver.server.ClientCertAuthorizer`` (the default, as in
  SignServer: a worker without ``AUTHTYPE`` and without authorized clients refuses everyone,
  with a message saying what to set): the request's TLS client
  certificate (verified against the server's client CA files during the handshake) must match
  one of the worker's *authorized clients*, stored as a JSON list in the worker property
  ``AUTHORIZED_CLIENTS`` (written by ``signpeer authorizedclients``)::

      [{"matchSubjectWithType": "SUBJECT_RDN_CN", "matchSubjectWithValue": "client1",
        "matchIssuerWithType": "ISSUER_DN_BCSTYLE", "matchIssuerWithValue": "CN=Dev CA, O=Example",
        "description": "the build server"}]

  Subject match types: see :data:`SUBJECT_MATCH_TYPES`. The issuer DN is compared as a set of
  attribute=value pairs (order, spaces around separators and letter case ignored), so
  ``CN=CA,O=X`` and ``O=X, CN=CA`` match the same issuer.
* ``USERNAME`` / ``org.signserver.server.UsernamePasswordAuthorizer`` /
  ``org.signserver.server.UsernameAuthorizer``: HTTP Basic. With ``ACCEPT_ALL_USERNAMES=true``
  any user name is accepted and no password is checked (SignServer's UsernameAuthorizer, for a
  front end that checked it); names in ``ACCEPT_USERNAMES`` (``;`` or ``,`` separated) are
  accepted the same way. Otherwise the password must match ``USER.<NAME>`` (name upper-cased,
  as every property key). Stored forms, strongest first:

  - ``scrypt$<N>$<r>$<p>$<salt, base64>$<hash, base64>`` — what ``signpeer setuserpassword``
    writes (scrypt, N=2**14, r=8, p=1, 16-byte random salt, 32-byte hash);
  - SignServer's ``<hex digest>:<ALGORITHM>[:<salt>]`` (digest of password + salt), accepted so
    existing property files keep working;
  - a clear-text password (SignServer's first form), accepted for the same reason; avoid it.

Missing credentials are a 401 (with ``WWW-Authenticate: Basic`` for USERNAME); credentials
that are present but not allowed (unknown user, wrong password, certificate not authorized)
are a 403.

Plugins add authorizer types (``signpeer_authorizer_types``, e.g. the JWT authorizer of
``signpeer-jwtauth``): subclasses of :class:`Authorizer` named by ``type_name`` and
``implementation_aliases`` (SignServer's class names), built with ``(config, services)``. An
authorizer that reads an OAuth 2.0 bearer token (RFC 6750) subclasses :class:`BearerAuthorizer`:
the pipeline hands it the token, which never reaches the worker. An authorizer that establishes
who the caller is sets ``identifies_user`` and fills ``request.username`` (and
``request.claims``): only then does a user name reach the worker.

A successful scrypt check is remembered (an HMAC of user and password under a per-process
random key) so that a client on a kept-alive connection does not pay ~50 ms of scrypt per
request; failures are never remembered. The memory lives in the authorizer, which a reload
replaces, so a changed password takes effect on reload like any other property.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar

import anyio.to_thread
from cryptography import x509
from cryptography.x509.oid import NameOID

from signpeer_core.config import WorkerConfig
from signpeer_core.errors import AuthenticationError, AuthorizationError, BadRequestError, ConfigurationError
from signpeer_core.keys import format_dn, parse_dn
from signpeer_core.workers import SignRequest

if TYPE_CHECKING:
    from signpeer_core.identity import CertificateIdentity
    from signpeer_core.services import Services

AUTHORIZED_CLIENTS_PROPERTY = "AUTHORIZED_CLIENTS"
#: ``AUTHTYPE`` of a worker that does not set it (SignServer's default).
DEFAULT_AUTHTYPE = "CLIENTCERT"

AUTHTYPE_ALIASES = {
    "NOAUTH": "NOAUTH",
    "CLIENTCERT": "CLIENTCERT",
    "ORG.SIGNSERVER.SERVER.CLIENTCERTAUTHORIZER": "CLIENTCERT",
    "USERNAME": "USERNAME",
    "ORG.SIGNSERVER.SERVER.USERNAMEPASSWORDAUTHORIZER": "USERNAME",
    "ORG.SIGNSERVER.SERVER.USERNAMEAUTHORIZER": "USERNAME",
}

_RDN = {
    "SUBJECT_RDN_CN": NameOID.COMMON_NAME,
    "SUBJECT_RDN_SERIALNO": NameOID.SERIAL_NUMBER,
    "SUBJECT_RDN_C": NameOID.COUNTRY_NAME,
    "SUBJECT_RDN_DC": NameOID.DOMAIN_COMPONENT,
    "SUBJECT_RDN_ST": NameOID.STATE_OR_PROVINCE_NAME,
    "SUBJECT_RDN_L": NameOID.LOCALITY_NAME,
    "SUBJECT_RDN_O": NameOID.ORGANIZATION_NAME,
    "SUBJECT_RDN_OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "SUBJECT_RDN_TITLE": NameOID.TITLE,
    "SUBJECT_RDN_UID": NameOID.USER_ID,
    "SUBJECT_RDN_E": NameOID.EMAIL_ADDRESS,
}
_ALTNAME = {
    "SUBJECT_ALTNAME_RFC822NAME": x509.RFC822Name,
    "SUBJECT_ALTNAME_DNSNAME": x509.DNSName,
    "SUBJECT_ALTNAME_URI": x509.UniformResourceIdentifier,
}
#: Every ``-matchSubjectWithType`` value understood.
SUBJECT_MATCH_TYPES = ("CERTIFICATE_SERIALNO", *_RDN, *_ALTNAME)
#: Every ``-matchIssuerWithType`` value understood.
ISSUER_MATCH_TYPES = ("ISSUER_DN_BCSTYLE",)


class BasicAuthRequired(AuthenticationError):
    """No user name was sent to a USERNAME worker, or the user name or password was rejected:
    401 with a Basic challenge (SignServer answers rejected credentials with 401 too)."""

    headers = {"WWW-Authenticate": 'Basic realm="signpeer"'}


# -- authorized clients (CLIENTCERT) ------------------------------------------------------------

def normalize_serial(text: str) -> str:
    """Lower-case hex without ``0x``, colons or leading zeros (how serials are compared)."""
    raw = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    try:
        return format(int(raw, 16), "x")
    except ValueError:
        raise BadRequestError(f"'{text}' is not a certificate serial number in hex") from None


def normalize_dn(dn: str | x509.Name) -> frozenset[tuple[str, str]]:
    """A DN as a set of (attribute OID, value) pairs: order, spacing and case do not matter."""
    name = dn if isinstance(dn, x509.Name) else parse_dn(dn)
    return frozenset((a.oid.dotted_string, " ".join(str(a.value).split()).casefold()) for a in name)


@dataclass(frozen=True)
class AuthorizedClient:
    """One rule: a subject match and the issuer DN the certificate must come from."""

    matchSubjectWithType: str  # SignServer's field names, kept in the stored JSON
    matchSubjectWithValue: str
    matchIssuerWithValue: str
    matchIssuerWithType: str = "ISSUER_DN_BCSTYLE"
    description: str = ""
    #: The key identifier of the client CA trusted when the rule was made (clientcas.py); empty:
    #: not bound, the issuer DN alone decides. Not part of the rule's identity (:meth:`key`).
    issuerKeyId: str = ""

    @classmethod
    def create(cls, subject_type: str, subject_value: str, issuer_value: str,
               issuer_type: str = "ISSUER_DN_BCSTYLE", description: str = "") -> AuthorizedClient:
        """A validated, normalized rule (what ``authorizedclients -add`` stores)."""
        st = subject_type.strip().upper()
        it = (issuer_type or "ISSUER_DN_BCSTYLE").strip().upper()
        if st not in SUBJECT_MATCH_TYPES:
            raise BadRequestError(f"unknown subject match type '{subject_type}'; use one of "
                                  f"{', '.join(SUBJECT_MATCH_TYPES)}")
        if it not in ISSUER_MATCH_TYPES:
            raise BadRequestError(f"unknown issuer match type '{issuer_type}'; use {', '.join(ISSUER_MATCH_TYPES)}")
        value = subject_value.strip()
        if not value:
            raise BadRequestError("the subject match value is empty")
        if st == "CERTIFICATE_SERIALNO":
            value = normalize_serial(value)
        if not issuer_value.strip():
            raise BadRequestError("the issuer DN (-matchIssuerWithValue) is empty")
        issuer = format_dn(parse_dn(issuer_value))  # validates, and stores it in one spelling
        return cls(st, value, issuer, it, description)

    @classmethod
    def for_certificate(cls, cert: x509.Certificate, subject_type: str, issuer_type: str = "ISSUER_DN_BCSTYLE",
                        description: str = "") -> AuthorizedClient:
        """The rule that matches ``cert`` by ``subject_type`` (``authorizedclients -cert``)."""
        st = subject_type.strip().upper()
        value: str | None
        if st == "CERTIFICATE_SERIALNO":
            value = format(cert.serial_number, "x")
        elif st in _RDN:
            attrs = cert.subject.get_attributes_for_oid(_RDN[st])
            value = str(attrs[0].value) if attrs else None
        elif st in _ALTNAME:
            names = _altnames(cert, _ALTNAME[st])
            value = names[0] if names else None
        else:
            raise BadRequestError(f"unknown subject match type '{subject_type}'; use one of "
                                  f"{', '.join(SUBJECT_MATCH_TYPES)}")
        if value is None:
            raise BadRequestError(f"the certificate has no value for {st}; choose another -matchSubjectWithType")
        return cls.create(st, value, format_dn(cert.issuer), issuer_type, description)

    def key(self) -> tuple[str, str, str, frozenset[tuple[str, str]]]:
        """Identity of a rule for -add/-remove (the description does not count)."""
        value = self.matchSubjectWithValue
        return (self.matchSubjectWithType, value.casefold() if self.matchSubjectWithType != "CERTIFICATE_SERIALNO"
                else value, self.matchIssuerWithType, normalize_dn(self.matchIssuerWithValue))


def _altnames(cert: x509.Certificate, kind: type) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.value.get_values_for_type(kind)]


def parse_authorized_clients(value: str) -> list[AuthorizedClient]:
    """Rules from the ``AUTHORIZED_CLIENTS`` property (a JSON list); a clear error otherwise."""
    if not value.strip():
        return []
    try:
        data = json.loads(value)
        if not isinstance(data, list):
            raise ValueError("not a list")
        return [dataclasses.replace(
                    AuthorizedClient.create(d["matchSubjectWithType"], d["matchSubjectWithValue"],
                                            d["matchIssuerWithValue"], d.get("matchIssuerWithType", "ISSUER_DN_BCSTYLE"),
                                            d.get("description", "")),
                    issuerKeyId=str(d.get("issuerKeyId", "")).strip().lower())
                for d in data]
    except (ValueError, KeyError, TypeError, AttributeError, BadRequestError) as exc:
        detail = exc.message if isinstance(exc, BadRequestError) else str(exc)
        raise ConfigurationError(
            f"{AUTHORIZED_CLIENTS_PROPERTY} is not a valid rule list ({detail}); rewrite it with "
            f"signpeer authorizedclients") from None


def serialize_authorized_clients(rules: list[AuthorizedClient]) -> str:
    return json.dumps([asdict(r) for r in rules], separators=(",", ":"))


class _CompiledRule:
    """A rule prepared for matching: normalized once at load, compared per request."""

    __slots__ = ("kind", "value", "issuer", "issuer_key_id")

    def __init__(self, rule: AuthorizedClient) -> None:
        self.issuer_key_id = rule.issuerKeyId
        self.kind = rule.matchSubjectWithType
        self.value = rule.matchSubjectWithValue if self.kind == "CERTIFICATE_SERIALNO" else \
            " ".join(rule.matchSubjectWithValue.split()).casefold()
        self.issuer = normalize_dn(rule.matchIssuerWithValue)

    def matches(self, cert: x509.Certificate, issuer: frozenset[tuple[str, str]], issuer_key_id: str) -> bool:
        if issuer != self.issuer or (self.issuer_key_id and self.issuer_key_id != issuer_key_id):
            return False
        if self.kind == "CERTIFICATE_SERIALNO":
            return format(cert.serial_number, "x") == self.value
        values: Iterator[str]
        if self.kind in _RDN:
            values = (str(a.value) for a in cert.subject.get_attributes_for_oid(_RDN[self.kind]))
        else:
            values = iter(_altnames(cert, _ALTNAME[self.kind]))
        return any(" ".join(v.split()).casefold() == self.value for v in values)


# -- passwords (USERNAME) ---------------------------------------------------------------------

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """The stored form of a password: ``scrypt$N$r$p$salt$hash`` (base64 without padding)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


_SIGNSERVER_HASH = re.compile(r"^([0-9a-fA-F]+):(SHA-?1|SHA-?224|SHA-?256|SHA-?384|SHA-?512|MD5)(?::(.*))?$", re.I)


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches a stored value in any supported form (constant time)."""
    if stored.startswith("scrypt$"):
        try:
            _, n, r, p, salt, digest = stored.split("$")
            expected = _b64(digest)
            got = hashlib.scrypt(password.encode(), salt=_b64(salt), n=int(n), r=int(r), p=int(p),
                                 dklen=len(expected), maxmem=256 * 1024 * 1024)
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(got, expected)
    m = _SIGNSERVER_HASH.match(stored)
    if m:
        name = m.group(2).lower().replace("-", "")
        got_hex = hashlib.new(name, (password + (m.group(3) or "")).encode()).hexdigest()
        return hmac.compare_digest(got_hex, m.group(1).lower())
    return hmac.compare_digest(stored.encode(), password.encode())


# -- authorizers ---------------------------------------------------------------------------------

class Authorizer(ABC):
    """Decides whether a request may use a worker; raises Authentication/AuthorizationError.

    ``authorize`` is synchronous (tests and the CLI use it); the server calls
    :meth:`check`, which an authorizer with slow checks (scrypt) overrides to run them in a
    thread so the event loop keeps serving other requests.
    """

    authtype: ClassVar[str] = ""
    #: True when the authorizer checks who the caller is and sets ``request.username`` (and
    #: ``request.claims``); otherwise the pipeline clears any user name before the worker sees it.
    identifies_user: ClassVar[bool] = False

    @abstractmethod
    def authorize(self, request: SignRequest, password: str | None) -> None: ...

    async def check(self, request: SignRequest, password: str | None) -> None:
        self.authorize(request, password)


class NoAuthorizer(Authorizer):
    authtype = "NOAUTH"

    def authorize(self, request: SignRequest, password: str | None) -> None:
        return None

    async def check(self, request: SignRequest, password: str | None) -> None:
        return None


class ClientCertAuthorizer(Authorizer):
    """``AUTHTYPE=CLIENTCERT``: the TLS client certificate must match an authorized client."""

    authtype = "CLIENTCERT"

    #: How many authorized identities :meth:`accepts` remembers before it starts over.
    _REMEMBER = 4096

    def __init__(self, config: WorkerConfig) -> None:
        self.worker = config.name
        self.rules = parse_authorized_clients(config.get_str(AUTHORIZED_CLIENTS_PROPERTY))
        self._compiled = [_CompiledRule(r) for r in self.rules]
        #: The identities :meth:`accepts` found authorized, by ``id()``, each with a weak reference
        #: (a dead identity's id may be reused by another: the reference tells them apart).
        self._accepted: dict[int, weakref.ref[CertificateIdentity]] = {}

    def _matches(self, cert: x509.Certificate, issuer_key_id: str) -> bool:
        """Whether one of the rules matches ``cert`` (issued by the client CA ``issuer_key_id``)."""
        issuer = normalize_dn(cert.issuer)
        for rule in self._compiled:
            if rule.matches(cert, issuer, issuer_key_id):
                return True
        return False

    def accepts(self, identity: CertificateIdentity) -> bool:
        """Whether :meth:`authorize` lets a request with ``identity``'s certificate and issuer key
        id through, without a :class:`SignRequest` and without raising (False: it would refuse;
        the caller then lets :meth:`authorize` say why). Memory only. An accepted identity is
        remembered (the REST API keeps one per TLS connection, so a connection's requests decide
        once); the rules never change in an authorizer (a reload builds a new one)."""
        known = self._accepted.get(id(identity))
        if known is not None and known() is identity:
            return True
        cert = identity.certificate
        if cert is None or not self._matches(cert, identity.issuer_key_id):
            return False
        if len(self._accepted) >= self._REMEMBER:
            self._accepted.clear()
        self._accepted[id(identity)] = weakref.ref(identity)
        return True

    def authorize(self, request: SignRequest, password: str | None) -> None:
        if not self._compiled:
            raise AuthorizationError(
                f"worker '{self.worker}' has no authorized clients (AUTHTYPE is CLIENTCERT, the default), so it "
                f"refuses everyone; add a client with signpeer authorizedclients -worker {self.worker} -add ..., "
                f"or set AUTHTYPE=NOAUTH (anybody may sign) or AUTHTYPE=USERNAME, then signpeer reload")
        cert = request.client_certificate
        if cert is None:
            raise AuthenticationError(
                f"worker '{self.worker}' requires a TLS client certificate (AUTHTYPE=CLIENTCERT); "
                f"connect with one issued by a CA the server trusts")
        if self._matches(cert, request.client_issuer_key_id):
            return
        raise AuthorizationError(
            f"client certificate (serial {cert.serial_number:x}, issuer {format_dn(cert.issuer)}, subject "
            f"{format_dn(cert.subject)}) is not authorized for worker '{self.worker}'; an administrator can "
            f"add it with signpeer authorizedclients -worker {self.worker} -add ...")


class UsernameAuthorizer(Authorizer):
    """``AUTHTYPE=USERNAME``: HTTP Basic user names, with or without a password check."""

    authtype = "USERNAME"
    identifies_user = True
    _CACHE_LIMIT = 4096

    def __init__(self, config: WorkerConfig) -> None:
        self.worker = config.name
        self.accept_all = config.get_bool("ACCEPT_ALL_USERNAMES")
        self.accept_names = {n.strip().lower() for n in re.split(r"[;,]", config.get_str("ACCEPT_USERNAMES")) if n.strip()}
        self.users = {k[len("USER."):].lower(): v for k, v in config.items() if k.startswith("USER.")}
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()

    def _precheck(self, request: SignRequest, password: str | None) -> tuple[str, bytes] | None:
        """Fast part: None when decided (accepted), else what the slow check needs."""
        name = request.username
        if not name:
            raise BasicAuthRequired(
                f"worker '{self.worker}' requires a user name and password (HTTP Basic authentication)")
        if self.accept_all or name.lower() in self.accept_names:
            return None
        stored = self.users.get(name.lower())
        if stored is None and password is not None and self.users:
            # Check the password against a configured user's stored value (same scheme, same
            # cost) and refuse whatever the outcome, so the response time does not tell which
            # user names exist. The empty token marks the decision as already made.
            return next(iter(self.users.values())), b""
        if stored is None or password is None:
            raise BasicAuthRequired(f"user '{name}' is not allowed to use worker '{self.worker}' "
                                    f"(unknown user or wrong password)")
        token = hmac.new(self._key, name.lower().encode() + b"\0" + password.encode(), "sha256").digest()
        if token in self._verified:
            return None
        return stored, token

    def _slow(self, request: SignRequest, password: str, stored: str, token: bytes) -> None:
        if not verify_password(stored, password) or not token:
            raise BasicAuthRequired(f"user '{request.username}' is not allowed to use worker '{self.worker}' "
                                    f"(unknown user or wrong password)")
        if len(self._verified) >= self._CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(token)

    def authorize(self, request: SignRequest, password: str | None) -> None:
        pending = self._precheck(request, password)
        if pending is not None:
            self._slow(request, password or "", *pending)

    async def check(self, request: SignRequest, password: str | None) -> None:
        pending = self._precheck(request, password)
        if pending is not None:
            await anyio.to_thread.run_sync(self._slow, request, password or "", *pending)


class BearerAuthorizer(Authorizer):
    """Base of authorizers that read an OAuth 2.0 bearer token (``Authorization: Bearer``).

    The pipeline calls :meth:`check_token` with the token the transport read (None when the
    request had none) instead of :meth:`check`. The token is the caller's credential: it is
    never put on the :class:`SignRequest`, and an implementation must keep it out of every log
    and error message. Plugins register subclasses with ``signpeer_authorizer_types``; they are
    built with ``(config, services)`` when the worker loads, and set ``type_name`` (what
    ``AUTHTYPE`` says) and optionally ``implementation_aliases``.
    """

    identifies_user = True
    type_name: ClassVar[str] = ""
    implementation_aliases: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    async def check_token(self, request: SignRequest, token: str | None) -> None:
        """Verify ``token`` and set ``request.username``/``request.claims``; raise
        :class:`AuthenticationError` (401), :class:`AuthorizationError` (403),
        :class:`BadRequestError` (400) or :class:`ServiceUnavailableError` (503)."""

    def authorize(self, request: SignRequest, password: str | None) -> None:
        raise AuthenticationError(f"AUTHTYPE {self.authtype} needs a bearer token; send Authorization: Bearer <token>")

    async def check(self, request: SignRequest, password: str | None) -> None:
        self.authorize(request, password)


def normalize_authtype(value: str, plugin_types: tuple[str, ...] = ()) -> str:
    authtype = AUTHTYPE_ALIASES.get(value.strip().upper())
    if authtype is None:
        known = ", ".join(("NOAUTH", "CLIENTCERT", "USERNAME", *plugin_types))
        raise ConfigurationError(f"unknown AUTHTYPE '{value}'; use one of {known} (a plugin type needs its "
                                 f"plugin installed, e.g. signpeer-jwtauth for JWT)")
    return authtype


def build_authorizer(config: WorkerConfig, services: Services | None = None) -> Authorizer:
    """The authorizer for a worker's ``AUTHTYPE`` (a ConfigurationError makes it OFFLINE).

    A value that names no built-in type is looked up among the plugins' authorizer types
    (``services.registry.authorizer_types``), which are built with ``(config, services)``.
    """
    value = config.get_str("AUTHTYPE", DEFAULT_AUTHTYPE)
    builtin = value.strip().upper() in AUTHTYPE_ALIASES
    if not builtin and services is not None and value in services.registry.authorizer_types:
        cls = services.registry.authorizer_types.get(value, "AUTHTYPE")
        authorizer: Authorizer = cls(config, services)
        return authorizer
    # The plugins' types (imported on first use) are needed only to name them in the error.
    plugin_types = tuple(sorted(services.registry.authorizer_types.primary)) \
        if services is not None and not builtin else ()
    authtype = normalize_authtype(value, plugin_types)
    if authtype == "CLIENTCERT":
        return ClientCertAuthorizer(config)
    if authtype == "USERNAME":
        return UsernameAuthorizer(config)
    return NoAuthorizer()
