"""The origins the Admin Web accepts a form from: the server's own names, never the request's ``Host``.

A form POST must carry an ``Origin`` (or, without one, a ``Referer``) naming this server. The
names come from the configuration, not from the request, so a request whose ``Host`` header
an attacker chose (DNS rebinding, a proxy passing any ``Host``) cannot make its own origin match:

* ``server_name`` in ``signpeer.toml`` (``SIGNPEER_SERVER_NAME``): the names clients use, comma
  separated, each ``host`` or ``host:port`` (a name without port means the listening port). Set it
  when clients reach the server through a proxy or under a name of another port.
* otherwise the DNS names and IP addresses of the server's TLS certificate, with the listening
  port: the only names a browser can reach the Admin Web under without a certificate warning.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from typing import TYPE_CHECKING

from cryptography import x509

if TYPE_CHECKING:
    from signpeer_core.api import Settings

log = logging.getLogger("signpeer.adminweb")

#: (host in lower case, port): IPv6 addresses without brackets.
Origin = tuple[str, int]


def _host_port(netloc: str, default_port: int) -> Origin | None:
    parsed = urllib.parse.urlsplit(f"//{netloc.strip()}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return parsed.hostname.lower(), port if port is not None else default_port


def certificate_names(certfile: str) -> list[str]:
    """The DNS names and IP addresses of a certificate's subject alternative names."""
    try:
        with open(certfile, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        log.warning("cannot read the server names from %s (%s); set server_name in signpeer.toml", certfile, exc)
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def allowed_origins(settings: Settings) -> frozenset[Origin]:
    """The (host, port) pairs an Admin Web form may come from (see the module docstring)."""
    port = settings.port
    names = [n for n in (part.strip() for part in settings.server_name.split(",")) if n]
    if not names:
        names = certificate_names(str(settings.tls_certfile))
    origins: set[Origin] = set()
    for name in names:
        try:
            bare = str(ipaddress.ip_address(name.strip("[]")))  # an IPv6 address without a port
            name = f"[{bare}]" if ":" in bare else bare
        except ValueError:
            pass
        origin = _host_port(name, port)
        if origin is not None:
            origins.add(origin)
    return frozenset(origins)


def origin_of(url: str) -> Origin | None:
    """The (host, port) of an ``https`` Origin or Referer; None for anything else (``null``, http)."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme.lower() != "https":
        return None
    return _host_port(parsed.netloc.rpartition("@")[2], 443)
