"""The CA side of the peer protocol: :class:`PeerClient` (one server) and the renewal flows.

This is what EJBCA is in SignServer's world. The CA connects *out* to the signing server over
mutual TLS with its own client certificate and drives renewals; the signing server never
connects to the CA.

A :class:`PeerClient` is the peer protocol's operations on top of the core HTTP client
(:class:`signpeer_core.httpclient.HttpClient`: kept-alive connections, because a new mutual-TLS
handshake costs the server ~2.5–3 ms of CPU against ~0.08 ms for a request on an open
connection; TLS; errors). It is thread-safe: :func:`renew_all` runs several renewals at once
over the same pool.

Failures are the error tree's (:mod:`signpeer_core.errors`), with the server's ``{"error": ...}``
text or a transport diagnostic. Three are the peer protocol's own subclasses, for the exit codes
``signpeer connector`` documents: :class:`PeerUnauthorized` (3, "Unable to connect to peer.
Unauthorized: ..."), :class:`PeerTLSError` (4, TLS trust in either direction) and
:class:`PeerUnreachable` (5).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.api import (
    AuthenticationError,
    AuthorizationError,
    HttpClient,
    IssuingCA,
    ServerUnreachableError,
    ServiceUnavailableError,
    SignpeerError,
    TLSError,
    base_url,
)
from signpeer_peerconnector.protocol import BASE_PATH, PEM_CHAIN_TYPE, UNAUTHORIZED


class PeerUnauthorized(AuthorizationError):
    """The server refused the peer (403/401); the message is EJBCA's "Unable to connect to peer. Unauthorized"."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        if UNAUTHORIZED.lower() not in message.lower():
            message = f"{UNAUTHORIZED}: {message}"
        super().__init__(f"Unable to connect to peer. {message}")


class PeerTLSError(TLSError):
    """The TLS handshake failed: untrusted server certificate, or our client certificate refused."""

    exit_code = 4


class PeerUnreachable(ServerUnreachableError):
    """No connection: refused, unknown host, timeout."""

    exit_code = 5


#: The peer protocol's classes instead of the core client's (same messages, the exit codes above).
PEER_ERRORS: dict[type[SignpeerError], type[SignpeerError]] = {
    AuthenticationError: PeerUnauthorized,
    AuthorizationError: PeerUnauthorized,
    TLSError: PeerTLSError,
    ServerUnreachableError: PeerUnreachable,
}


def _segment(binding: str | int) -> str:
    """A binding (id or name) as one path segment, percent-encoded as httpx encodes a path."""
    return quote(str(binding), safe="!$&'()*+,;=:@")


def peer_base_url(url: str) -> str:
    """``https://host:8443`` or ``.../signserver/peer/v1`` → the protocol's base URL."""
    return base_url(url, BASE_PATH)


class PeerClient:
    """A connection pool to one signing server's peer endpoint, with one method per operation."""

    def __init__(
        self,
        url: str,
        cert: str | Path,
        key: str | Path,
        cacert: str | Path | None = None,
        timeout: float = 30.0,
        max_connections: int = 16,
        key_password: str | None = None,
    ) -> None:
        self.base_url = peer_base_url(url)
        self._http = HttpClient(
            self.base_url, cafile=cacert, cert=cert, key=key, key_password=key_password, timeout=timeout,
            max_connections=max_connections, error_classes=PEER_ERRORS,
            headers={"User-Agent": "signpeer-connector/0.1", "Accept": "application/json"},
            ca_hint="--cacert (or cacert in the config file)", cert_hint="--cert/--key")
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call to a path under the peer base URL; raises the error tree (see the module docstring)."""
        return self._http.request(method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._http.json(method, path, **kwargs)

    def _call(self, method: str, path: str, payload: bytes | None = None,
              content_type: str = "application/json") -> Any:
        """An operation on a kept-alive connection (:meth:`HttpClient.call`); the answer's JSON."""
        return self._http.call(method, path, payload, content_type)

    # -- operations ----------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """Application-level ping; adds the round trip in ms as ``rttMs``."""
        start = time.perf_counter()
        result: dict[str, Any] = self._json("GET", "/ping")
        result["rttMs"] = (time.perf_counter() - start) * 1000
        return result

    def list_bindings(self, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every key binding, page after page (``GET /keybindings`` follows ``nextCursor``)."""
        out: list[dict[str, Any]] = []
        params: dict[str, str] = {} if page_size is None else {"limit": str(page_size)}
        while True:
            page = self._json("GET", "/keybindings", params=params)
            out.extend(page["keyBindings"])
            cursor = page.get("nextCursor")
            if not cursor:
                return out
            params = {**params, "after": str(cursor)}

    def get_binding(self, binding: str | int) -> dict[str, Any]:
        return dict(self._call("GET", f"/keybindings/{_segment(binding)}"))

    def next_key(self, binding: str | int, replace: bool = False) -> dict[str, Any]:
        return dict(self._call("POST", f"/keybindings/{_segment(binding)}/nextkey", json.dumps({"replace": replace}).encode()))

    def csr(self, binding: str | int) -> tuple[x509.CertificateSigningRequest, dict[str, Any]]:
        answer = self._call("POST", f"/keybindings/{_segment(binding)}/csr")
        try:
            csr = x509.load_pem_x509_csr(answer["csr"].encode())
        except (KeyError, ValueError) as exc:
            raise ServiceUnavailableError(f"the server sent a CSR that cannot be read: {exc}") from exc
        return csr, answer

    def install(self, binding: str | int, chain: list[x509.Certificate]) -> dict[str, Any]:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return dict(self._call("POST", f"/keybindings/{_segment(binding)}/certificate", pem, PEM_CHAIN_TYPE))

    def set_status(self, binding: str | int, status: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/keybindings/{_segment(binding)}/status", json.dumps({"status": status}).encode()))


# -- renewal flows -------------------------------------------------------------------------------
@dataclass
class RenewalResult:
    """One renewal: what was installed, or why it failed, and where the time went."""

    binding: str
    ok: bool
    error: str = ""
    key_alias: str = ""
    promoted: bool = False
    certificate: x509.Certificate | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def renew(client: PeerClient, ca: IssuingCA, binding: str | int, rekey: bool = False) -> RenewalResult:
    """Renew one binding: next key (when ``rekey``), CSR, verify, issue, install."""
    timings: dict[str, float] = {}
    name = str(binding)
    try:
        t = time.perf_counter()
        if rekey:
            client.next_key(binding)
            timings["nextkey"] = time.perf_counter() - t
            t = time.perf_counter()
        csr, _ = client.csr(binding)
        timings["csr"] = time.perf_counter() - t
        t = time.perf_counter()
        chain = ca.issue(csr)
        timings["issue"] = time.perf_counter() - t
        t = time.perf_counter()
        installed = client.install(binding, chain)
        timings["install"] = time.perf_counter() - t
    except SignpeerError as exc:
        return RenewalResult(name, False, exc.message, timings=timings)
    return RenewalResult(installed.get("keyBinding", {}).get("name", name), True, key_alias=installed["keyPairAlias"],
                         promoted=installed["promoted"], certificate=chain[0], timings=timings)


def needs_renewal(binding: dict[str, Any], within_days: float | None, now: dt.datetime | None = None) -> bool:
    """True for bindings without a certificate, or (with ``within_days``) expiring within that many days."""
    if within_days is None:
        return True
    cert = binding.get("certificate")
    if not cert:
        return True
    not_after = dt.datetime.strptime(cert["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return not_after - now <= dt.timedelta(days=within_days)


@dataclass
class RenewAllSummary:
    renewed: list[RenewalResult] = field(default_factory=list)
    failed: list[RenewalResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (binding, reason)
    seconds: float = 0.0
    list_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.renewed) / self.seconds if self.seconds else 0.0

    def step_totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for result in self.renewed:
            for step, seconds in result.timings.items():
                totals[step] = totals.get(step, 0.0) + seconds
        return totals


def renew_all(
    client: PeerClient,
    ca: IssuingCA,
    expiring_within: float | None = None,
    rekey: bool = False,
    parallel: int = 8,
    progress: Callable[[RenewalResult, int, int], None] | None = None,
) -> RenewAllSummary:
    """Renew every ACTIVE, ONLINE binding (those expiring within ``expiring_within`` days, if given).

    DISABLED or OFFLINE bindings are skipped with the reason, as EJBCA's Remote Internal Key
    Binding Updater skips bindings that are not enabled and usable.
    """
    summary = RenewAllSummary()
    start = time.perf_counter()
    bindings = client.list_bindings()
    summary.list_seconds = time.perf_counter() - start
    todo = []
    for b in bindings:
        label = b["name"]
        if b["status"] != "ACTIVE":
            summary.skipped.append((label, "disabled"))
        elif b["operationalStatus"] != "ONLINE":
            summary.skipped.append((label, "offline: " + "; ".join(b.get("offlineReasons") or [])))
        elif not needs_renewal(b, expiring_within):
            summary.skipped.append((label, f"certificate valid until {b['certificate']['notAfter']}"))
        else:
            todo.append(b)
    lock = threading.Lock()
    done = 0

    def one(b: dict[str, Any]) -> RenewalResult:
        result = renew(client, ca, b["id"], rekey=rekey)
        result.binding = b["name"]
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in as_completed([pool.submit(one, b) for b in todo]):
            result = future.result()
            with lock:
                done += 1
                (summary.renewed if result.ok else summary.failed).append(result)
                if progress is not None:
                    progress(result, done, len(todo))
    summary.seconds = time.perf_counter() - start
    return summary
