"""The CA side of the peer protocol: :class:`PeerClient` (one server) and the renewal flows.

This is what EJBCA is in SignServer's world. The CA connects *out* to the signing server over
mutual TLS with its own client certificate and drives renewals; the signing server never
connects to the CA.

A :class:`PeerClient` keeps a pool of kept-alive HTTP/1.1 connections (httpx), because a new
mutual-TLS handshake costs the server ~2.5–3 ms of CPU against ~0.08 ms for a request on an
open connection. It is thread-safe: :func:`renew_all` runs several renewals at once over the
same pool.

Failures are raised as :class:`PeerError` subclasses whose messages say what went wrong in
the operator's terms: "Unauthorized" (with what to do on the server), TLS trust problems in
either direction, an unreachable server, or the server's own ``{"error": ...}`` text.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_peerconnector.issuer import IssuingCA, IssuingError
from signpeer_peerconnector.protocol import BASE_PATH, PEM_CHAIN_TYPE, UNAUTHORIZED


class PeerError(Exception):
    """A peer call failed; ``message`` says why in the operator's terms."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PeerUnauthorized(PeerError):
    """The server refused the peer (403/401)."""

    exit_code = 3


class PeerTLSError(PeerError):
    """The TLS handshake failed: untrusted server certificate, or our client certificate refused."""

    exit_code = 4


class PeerUnreachable(PeerError):
    """No connection: refused, unknown host, timeout."""

    exit_code = 5


class PeerRequestError(PeerError):
    """The server answered with an error status (404 unknown binding, 409 wrong key, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def peer_base_url(url: str) -> str:
    """``https://host:8443`` or ``.../signserver/peer/v1`` → the protocol's base URL."""
    url = url.strip().rstrip("/")
    if not url.startswith(("https://", "http://")):
        url = "https://" + url
    if url.endswith(BASE_PATH):
        return url
    return url + BASE_PATH


_CLIENT_CERT_REJECTED = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "CERTIFICATE_EXPIRED", "BAD_CERTIFICATE",
                         "CERTIFICATE_UNKNOWN", "CERTIFICATE_REVOKED", "ACCESS_DENIED", "UNSUPPORTED_CERTIFICATE")


def _explain_transport_error(url: str, exc: Exception) -> PeerError:
    text = f"{exc}"
    upper = text.upper()
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        detail = text.split("certificate verify failed:")[-1].strip(" )]") if "verify failed" in text else text
        return PeerTLSError(
            f"TLS failure: the server's certificate at {url} is not trusted ({detail}). Give the CA that issued "
            "the server's TLS certificate with --cacert (or cacert in the config file)")
    for alert in _CLIENT_CERT_REJECTED:
        if alert in upper:
            reason = alert.lower().replace("_", " ")
            return PeerTLSError(
                f"TLS failure: the server rejected this connector's client certificate ({reason}). Check that "
                "--cert/--key are valid now (not expired) and issued by a CA the server trusts "
                "(its client_cafiles setting)")
    if isinstance(exc, httpx.TimeoutException):
        return PeerUnreachable(f"no answer from {url} in time ({type(exc).__name__}); is the server up and the URL right?")
    if isinstance(exc, ssl.SSLError) or "SSL" in upper or "TLS" in upper:
        return PeerTLSError(f"TLS failure talking to {url}: {text}")
    if isinstance(exc, httpx.ConnectError):
        return PeerUnreachable(f"cannot connect to {url}: {text or type(exc).__name__}. Is signpeer serve running "
                               "there, and are host and port right?")
    return PeerUnreachable(f"the connection to {url} failed: {type(exc).__name__}: {text}")


def check_client_certificate(path: Path, now: dt.datetime | None = None) -> None:
    """Refuse to connect with a client certificate that is not valid now: the server would drop
    the connection without saying why, so say it here."""
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError) as exc:
        raise PeerTLSError(f"cannot read the connector's client certificate {path}: {exc}") from exc
    now = now or dt.datetime.now(dt.timezone.utc)
    subject = cert.subject.rfc4514_string()
    if now > cert.not_valid_after_utc:
        raise PeerTLSError(
            f"TLS failure: the connector's client certificate ({subject}, {path}) expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; the server rejects expired client certificates. "
            "Issue a new one and authorize it (signpeer wspeersystems -add -cert <file>)")
    if now < cert.not_valid_before_utc:
        raise PeerTLSError(
            f"TLS failure: the connector's client certificate ({subject}, {path}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC; check the clocks or use a valid certificate")


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
        try:
            context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
            context.load_cert_chain(str(cert), str(key), password=key_password)
        except (OSError, ssl.SSLError) as exc:
            raise PeerTLSError(f"cannot load the TLS files (cert {cert}, key {key}, cacert {cacert}): {exc}") from exc
        check_client_certificate(Path(cert))
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=context,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                keepalive_expiry=60.0),
            headers={"User-Agent": "signpeer-connector/0.1", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; raises :class:`PeerError` for transport failures and error statuses."""
        try:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.RemoteProtocolError:
                # A kept-alive connection the server closed meanwhile: one retry on a fresh one.
                response = self._http.request(method, path, **kwargs)
        except httpx.RemoteProtocolError as exc:
            # The server's TLS stack drops a connection whose client certificate it refuses without
            # an alert the client could read (TLS 1.3 verifies it after our handshake completes).
            raise PeerTLSError(
                f"TLS failure: {self.base_url} closed the connection right after the handshake without "
                "answering, which is how it refuses a client certificate it does not accept. Check that "
                "--cert/--key were issued by a CA the server trusts (its client_cafiles setting) and are "
                "valid now") from exc
        except httpx.HTTPError as exc:
            raise _explain_transport_error(self.base_url, exc) from exc
        except ssl.SSLError as exc:  # pragma: no cover - httpx wraps these
            raise _explain_transport_error(self.base_url, exc) from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error") or response.text
            except ValueError:
                message = response.text or response.reason_phrase
            if response.status_code in (401, 403):
                if UNAUTHORIZED.lower() not in message.lower():
                    message = f"{UNAUTHORIZED}: {message}"
                raise PeerUnauthorized(f"Unable to connect to peer. {message}")
            raise PeerRequestError(response.status_code, f"{message} (HTTP {response.status_code})")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- operations ----------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """Application-level ping; adds the round trip in ms as ``rttMs``."""
        start = time.perf_counter()
        result: dict[str, Any] = self._json("GET", "/ping")
        result["rttMs"] = (time.perf_counter() - start) * 1000
        return result

    def list_bindings(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/keybindings")["keyBindings"])

    def get_binding(self, binding: str | int) -> dict[str, Any]:
        return dict(self._json("GET", f"/keybindings/{binding}"))

    def next_key(self, binding: str | int, replace: bool = False) -> dict[str, Any]:
        return dict(self._json("POST", f"/keybindings/{binding}/nextkey", json={"replace": replace}))

    def csr(self, binding: str | int) -> tuple[x509.CertificateSigningRequest, dict[str, Any]]:
        answer = self._json("POST", f"/keybindings/{binding}/csr")
        try:
            csr = x509.load_pem_x509_csr(answer["csr"].encode())
        except (KeyError, ValueError) as exc:
            raise PeerError(f"the server sent a CSR that cannot be read: {exc}") from exc
        return csr, answer

    def install(self, binding: str | int, chain: list[x509.Certificate]) -> dict[str, Any]:
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return dict(self._json("POST", f"/keybindings/{binding}/certificate", content=pem,
                               headers={"Content-Type": PEM_CHAIN_TYPE}))

    def set_status(self, binding: str | int, status: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/keybindings/{binding}/status", json={"status": status}))


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
    except (PeerError, IssuingError) as exc:
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
    not_after = dt.datetime.strptime(cert["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
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
