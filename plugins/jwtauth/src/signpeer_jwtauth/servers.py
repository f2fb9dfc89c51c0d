"""The JWT authorizer's configuration: trusted authorization servers and claim rules.

SignServer's property names (its JWT Authorizer page), as indexed worker properties:

* ``AUTHSERVER<n>.ISSUER`` — the ``iss`` of the server's tokens (required for each ``n``);
* ``AUTHSERVER<n>.PUBLICKEY`` — its public key, base64 of the DER SubjectPublicKeyInfo (or PEM);
  ``AUTHSERVER<n>.KEYALG`` — ``RSA`` (default), ``EC``/``ECDSA`` (or ``Ed25519``): what the key
  must be;
* ``AUTHSERVER<n>.JWKS_URL`` — signpeer's: an ``https://`` JWKS location (the provider's
  ``jwks_uri``) instead of, or besides, a fixed key; ``AUTHSERVER<n>.JWKS_CAFILE`` — PEM file of
  the CA(s) to trust for that HTTPS server (default: the system's CAs), relative to the data
  directory;
* ``AUTHJWT<n>.ISSUER``, ``AUTHJWT<n>.CLAIM.NAME``, ``AUTHJWT<n>.CLAIM.VALUE`` — a rule: a token
  of that issuer whose claim has that value (or is a list holding it) is authorized. A rule
  without ``CLAIM.NAME`` authorizes every valid token of its issuer.

Everything is checked when the worker loads: a typo in a property name, an index with no
issuer, a key that does not parse, a rule for an issuer no server has — each makes the signer
OFFLINE with the reason.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from signpeer_core.api import ConfigurationError, PublicKey, WorkerConfig

_SERVER = re.compile(r"^AUTHSERVER(\d+)\.(.+)$")
_RULE = re.compile(r"^AUTHJWT(\d+)\.(.+)$")
SERVER_FIELDS = ("ISSUER", "PUBLICKEY", "KEYALG", "JWKS_URL", "JWKS_CAFILE", "DESCRIPTION")
RULE_FIELDS = ("ISSUER", "CLAIM.NAME", "CLAIM.VALUE", "DESCRIPTION")
_KEYALGS = {"RSA": "RSA", "EC": "EC", "ECDSA": "EC", "ED25519": "OKP", "EDDSA": "OKP"}


@dataclass(frozen=True)
class AuthServer:
    """One trusted authorization server (identity provider)."""

    index: int
    issuer: str
    public_key: PublicKey | None = None
    jwks_url: str | None = None
    jwks_cafile: Path | None = None
    description: str = ""

    @property
    def label(self) -> str:
        return f"AUTHSERVER{self.index} ({self.issuer})"


@dataclass(frozen=True)
class ClaimRule:
    """One ``AUTHJWT<n>`` rule."""

    index: int
    issuer: str
    claim: str | None = None
    value: str | None = None


def _indexed(config: WorkerConfig, pattern: re.Pattern[str], fields: tuple[str, ...],
             prefix: str) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    for key, value in config.items():
        m = pattern.match(key.upper())
        if not m:
            continue
        name = m.group(2)
        if name not in fields:
            raise ConfigurationError(f"unknown property {key}; {prefix}<n> takes "
                                     + ", ".join(f"{prefix}<n>.{f}" for f in fields))
        found.setdefault(int(m.group(1)), {})[name] = value.strip()
    return found


def _public_key(index: int, text: str, keyalg: str) -> PublicKey:
    prop = f"AUTHSERVER{index}.PUBLICKEY"
    try:
        if "-----BEGIN" in text:
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ConfigurationError(f"{prop} is not a public key (base64 of the DER SubjectPublicKeyInfo, or PEM): "
                                 f"{exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ConfigurationError(f"{prop}: {type(key).__name__} keys cannot verify tokens; use RSA, EC or Ed25519")
    kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "EC" if isinstance(key, ec.EllipticCurvePublicKey) else "OKP"
    if kind != keyalg:
        raise ConfigurationError(f"{prop} is a {kind} key but AUTHSERVER{index}.KEYALG says "
                                 f"{'RSA (the default)' if keyalg == 'RSA' else keyalg}; set KEYALG to match")
    return key


def parse_servers(config: WorkerConfig, resolve: Callable[[str], Path] | None = None) -> list[AuthServer]:
    """The ``AUTHSERVER<n>`` servers of ``config``, by index; ``resolve`` makes file paths absolute."""
    servers = []
    for index, fields in sorted(_indexed(config, _SERVER, SERVER_FIELDS, "AUTHSERVER").items()):
        issuer = fields.get("ISSUER", "")
        if not issuer:
            raise ConfigurationError(f"AUTHSERVER{index}.ISSUER is not set (the iss of the server's tokens)")
        keyalg_text = fields.get("KEYALG", "RSA") or "RSA"
        keyalg = _KEYALGS.get(keyalg_text.upper())
        if keyalg is None:
            raise ConfigurationError(f"AUTHSERVER{index}.KEYALG '{keyalg_text}' is not RSA, EC/ECDSA or Ed25519")
        key = _public_key(index, fields["PUBLICKEY"], keyalg) if fields.get("PUBLICKEY") else None
        url = fields.get("JWKS_URL") or None
        if url is not None and not url.lower().startswith("https://"):
            raise ConfigurationError(f"AUTHSERVER{index}.JWKS_URL must be an https:// URL (the keys that authorize "
                                     f"signing must come over an authenticated channel), not '{url}'")
        if key is None and url is None:
            raise ConfigurationError(f"AUTHSERVER{index} ({issuer}) has neither PUBLICKEY nor JWKS_URL; set one")
        cafile = fields.get("JWKS_CAFILE") or None
        path = None
        if cafile:
            path = resolve(cafile) if resolve else Path(cafile)
            if not path.is_file():
                raise ConfigurationError(f"AUTHSERVER{index}.JWKS_CAFILE {path} does not exist")
        servers.append(AuthServer(index, issuer, key, url, path, fields.get("DESCRIPTION", "")))
    if not servers:
        raise ConfigurationError("AUTHTYPE=JWT needs at least one trusted authorization server: set "
                                 "AUTHSERVER1.ISSUER and AUTHSERVER1.JWKS_URL (or AUTHSERVER1.PUBLICKEY)")
    return servers


def parse_rules(config: WorkerConfig, servers: list[AuthServer]) -> list[ClaimRule]:
    """The ``AUTHJWT<n>`` rules of ``config``; each names the issuer of a configured server."""
    issuers = {s.issuer for s in servers}
    rules = []
    for index, fields in sorted(_indexed(config, _RULE, RULE_FIELDS, "AUTHJWT").items()):
        issuer = fields.get("ISSUER", "")
        if not issuer:
            raise ConfigurationError(f"AUTHJWT{index}.ISSUER is not set (the issuer whose tokens the rule matches)")
        if issuer not in issuers:
            raise ConfigurationError(f"AUTHJWT{index}.ISSUER '{issuer}' is not the ISSUER of any AUTHSERVER<n>; "
                                     f"trusted: {', '.join(sorted(issuers))}")
        name, value = fields.get("CLAIM.NAME") or None, fields.get("CLAIM.VALUE")
        if name is None and value:
            raise ConfigurationError(f"AUTHJWT{index}.CLAIM.VALUE is set without AUTHJWT{index}.CLAIM.NAME")
        if name is not None and value is None:
            raise ConfigurationError(f"AUTHJWT{index}.CLAIM.NAME '{name}' needs AUTHJWT{index}.CLAIM.VALUE")
        rules.append(ClaimRule(index, issuer, name, value))
    if not rules:
        raise ConfigurationError("AUTHTYPE=JWT needs at least one claim rule: e.g. AUTHJWT1.ISSUER=<issuer>, "
                                 "AUTHJWT1.CLAIM.NAME=groups, AUTHJWT1.CLAIM.VALUE=signers")
    return rules
