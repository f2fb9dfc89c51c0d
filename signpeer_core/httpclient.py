"""The one HTTP client layer of signpeer: TLS, kept-alive connections, errors in the error tree.

Every client of a signpeer server uses :class:`HttpClient`: ``signpeer signdocument``, the CLI's
calls to the running server (:func:`signpeer_core.server.call_server`), the CA connector of the
peer protocol and the CA side of RA mode. It does three things in one place:

* **TLS**: :func:`tls_context` builds the context from (CA file, client certificate, key, key
  password); a client certificate that is not valid now is refused before connecting
  (:func:`check_client_certificate`), because the server would drop the connection without
  saying why.
* **Error answers**: an answer with an error status becomes the class of
  :mod:`signpeer_core.errors` that :data:`STATUS_ERRORS` names for the status (one table), with
  the server's ``{"error": ...}`` message and ``(HTTP <status>)`` after it. A client may raise
  subclasses of its own instead (``error_classes``), e.g. with other exit codes.
* **Transport diagnostics**: a refused connection, a timeout, an untrusted server certificate or
  a refused client certificate becomes :class:`~signpeer_core.errors.ServerUnreachableError` or
  :class:`~signpeer_core.errors.TLSError` with a message naming the URL and what to check —
  never a traceback.

Connections are kept alive (a new mutual-TLS handshake costs the server far more CPU than a
request on an open connection), and one client is safe to use from several threads.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from signpeer_core.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    RequestTooLargeError,
    ServerUnreachableError,
    ServiceUnavailableError,
    SignpeerError,
    TLSError,
)

PathLike = str | Path

#: The error class for each status a signpeer server answers with (other statuses raise a plain
#: :class:`SignpeerError` carrying the status).
STATUS_ERRORS: dict[int, type[SignpeerError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthorizationError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    503: ServiceUnavailableError,
}

#: TLS alerts by which a server refuses the client certificate (TLS 1.2 sends them in the handshake).
_CLIENT_CERT_REJECTED = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "CERTIFICATE_EXPIRED", "BAD_CERTIFICATE",
                         "CERTIFICATE_UNKNOWN", "CERTIFICATE_REVOKED", "ACCESS_DENIED", "UNSUPPORTED_CERTIFICATE")


def base_url(url: str, path: str = "") -> str:
    """``host:port``, ``https://host:port`` or ``https://host:port<path>`` → ``https://host:port<path>``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("https://", "http://")):
        url = "https://" + url
    if path and not url.endswith(path):
        url += path
    return url


def error_for_answer(status: int, message: str) -> SignpeerError:
    """The error for an answer with ``status``: the class :data:`STATUS_ERRORS` names, with ``message``."""
    exc = STATUS_ERRORS.get(status, SignpeerError)(message)
    exc.status = status
    return exc


def answer_message(response: httpx.Response) -> str:
    """The server's ``{"error": ...}`` text of an error answer, else its body or reason phrase."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return response.text.strip() or response.reason_phrase or f"HTTP {response.status_code}"


def tls_context(cafile: PathLike | None = None, cert: PathLike | None = None, key: PathLike | None = None,
                password: str | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ``cafile`` (the system's CAs when None), with the client
    certificate ``cert`` (its key in ``key``, or in ``cert`` when None) when given."""
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if cert:
            context.load_cert_chain(str(cert), str(key) if key else None, password=password)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f"{what} {path}" for what, path in
                          (("CA file", cafile), ("client certificate", cert), ("key", key)) if path)
        reason = str(exc) if isinstance(exc, ssl.SSLError) or not exc.strerror else exc.strerror
        raise TLSError(f"cannot load the TLS files ({files or 'system CAs'}): {reason}") from None
    return context


def check_client_certificate(path: PathLike, now: dt.datetime | None = None) -> None:
    """Refuse a client certificate that is not valid now: the server would drop the connection
    without saying why, so say it here."""
    try:
        cert = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    except (OSError, ValueError) as exc:
        raise TLSError(f"cannot read the client certificate {path}: {exc}") from None
    now = now or dt.datetime.now(dt.UTC)
    subject = cert.subject.rfc4514_string()
    if now > cert.not_valid_after_utc:
        raise TLSError(
            f"TLS failure: the client certificate ({subject}, {path}) expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; the server rejects expired client certificates. "
            "Issue a new one and authorize it on the server")
    if now < cert.not_valid_before_utc:
        raise TLSError(
            f"TLS failure: the client certificate ({subject}, {path}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC; check the clocks or use a valid certificate")


class HttpClient:
    """Kept-alive connections to one server; :meth:`request` raises the error tree, never httpx's.

    ``ca_hint`` and ``cert_hint`` name, in the caller's terms, where the CA file and the client
    certificate come from (an option, a file); the diagnostics tell the user to check them.
    ``error_classes`` replaces a class of :data:`STATUS_ERRORS` (or :class:`TLSError`,
    :class:`ServerUnreachableError`) by a subclass the caller prefers, built with the same message.
    """

    def __init__(
        self,
        base_url: str,
        *,
        cafile: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        key_password: str | None = None,
        timeout: float = 30.0,
        max_connections: int = 16,
        headers: Mapping[str, str] | None = None,
        error_classes: Mapping[type[SignpeerError], type[SignpeerError]] | None = None,
        ca_hint: str = "--cacert",
        cert_hint: str = "--cert/--key",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.error_classes = dict(error_classes or {})
        self.ca_hint = ca_hint
        self.cert_hint = cert_hint
        self._client_cert = cert is not None
        try:
            context = tls_context(cafile, cert, key, key_password)
            if cert is not None:
                check_client_certificate(cert)
        except TLSError as exc:
            raise self._error(TLSError, exc.message) from None
        self._tls = context
        self._headers = dict(headers or {})
        self._timeout = timeout
        #: :meth:`call`'s kept-alive standard-library connections, one per thread in flight.
        self._kept: list[KeptConnection] = []
        self._kept_lock = threading.Lock()
        self._kept_slots = threading.BoundedSemaphore(max(1, max_connections))
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=context,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                keepalive_expiry=60.0),
            headers=dict(headers or {}),
        )

    def close(self) -> None:
        with self._kept_lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            conn.close()
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call (``kwargs`` as httpx's: ``json``, ``content``, ``headers``, ``auth``, ``timeout``).

        Returns a successful answer; raises the error tree for an error answer or a transport failure.
        """
        try:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.RemoteProtocolError:
                # A kept-alive connection the server closed meanwhile: one retry on a fresh one.
                response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            status = response.status_code
            error = self._error(STATUS_ERRORS.get(status, SignpeerError), f"{answer_message(response)} (HTTP {status})")
            error.status = status
            raise error
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`, and the answer's JSON."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailableError(f"the answer of {self.base_url} to {method} {path} is not JSON "
                                          f"(HTTP {response.status_code})") from None

    def connection(self) -> KeptConnection:
        """A kept-alive connection of its own for one thread's hot loop (see :class:`KeptConnection`)."""
        return KeptConnection(self)

    def call(self, method: str, path: str, payload: bytes | None = None,
             content_type: str = "application/json") -> Any:
        """One call on a kept-alive standard-library connection (:class:`KeptConnection`, a fraction
        of httpx's cost) from this client's pool, usable from many threads at once (at most
        ``max_connections`` connections); the answer's JSON. Errors as :meth:`request`."""
        if not self._kept_slots.acquire(timeout=self._timeout):
            raise self._transport_error(httpx.PoolTimeout(f"all {self.base_url} connections stayed busy"))
        try:
            with self._kept_lock:
                conn = self._kept.pop() if self._kept else None
            if conn is None:
                conn = self.connection()
            try:
                return conn.call(method, path, payload, content_type)
            finally:
                with self._kept_lock:
                    self._kept.append(conn)
        finally:
            self._kept_slots.release()

    # -- errors ----------------------------------------------------------------------------------
    def _error(self, cls: type[SignpeerError], message: str) -> SignpeerError:
        return self.error_classes.get(cls, cls)(message)

    def _transport_error(self, exc: httpx.HTTPError) -> SignpeerError:
        """What a transport failure means, in the operator's terms."""
        url, text = self.base_url, str(exc)
        upper = text.upper()
        if "CERTIFICATE_VERIFY_FAILED" in upper:
            detail = text.split("certificate verify failed:")[-1].strip(" )]") if "verify failed" in text else text
            host = " and that the URL's host is a name the certificate holds" if "hostname" in detail.lower() else ""
            return self._error(TLSError, (
                f"cannot connect to {url}: TLS failure: the server's certificate is not trusted ({detail}). Check "
                f"that {self.ca_hint} holds the CA that issued the server's TLS certificate{host}"))
        for alert in _CLIENT_CERT_REJECTED:
            if alert in upper:
                return self._error(TLSError, (
                    f"cannot connect to {url}: TLS failure: the server rejected the client certificate "
                    f"({alert.lower().replace('_', ' ')}). Check that {self.cert_hint} are valid now and issued by "
                    "a CA the server trusts (its client_cafiles setting)"))
        # An EOF in the middle of TLS once the handshake is done is the server dropping the connection:
        # httpx reports it as a read or write error, or as a protocol error, depending on the moment.
        dropped = isinstance(exc, httpx.RemoteProtocolError) or (
            isinstance(exc, (httpx.ReadError, httpx.WriteError)) and "EOF OCCURRED IN VIOLATION OF PROTOCOL" in upper)
        if dropped:
            if self._client_cert:
                # The server's TLS stack drops a connection whose client certificate it refuses without
                # an alert the client could read (TLS 1.3 verifies it after the handshake completes).
                return self._error(TLSError, (
                    f"TLS failure: {url} closed the connection right after the handshake without answering, "
                    "which is how it refuses a client certificate it does not accept. Check that "
                    f"{self.cert_hint} were issued by a CA the server trusts (its client_cafiles setting) and "
                    "are valid now"))
            return self._error(ServerUnreachableError, (
                f"{url} closed the connection without answering; is a signpeer server running there?"))
        if isinstance(exc, httpx.TimeoutException):
            return self._error(ServerUnreachableError, (
                f"no answer from {url} in time ({type(exc).__name__}); is the server up and the URL right?"))
        if "SSL" in upper or "TLS" in upper:
            return self._error(TLSError, f"cannot connect to {url}: TLS failure: {text}")
        if isinstance(exc, httpx.ConnectError):
            return self._error(ServerUnreachableError, (
                f"cannot connect to {url}: {text or type(exc).__name__}. Is signpeer serve running there, and "
                "are host and port right?"))
        return self._error(ServerUnreachableError, f"the connection to {url} failed: {type(exc).__name__}: {text}")


#: The most bytes a request's head and body may take to leave in one write: a TLS record's
#: plaintext (16 KiB). A larger request takes several records whatever is done.
ONE_WRITE_MOST = 16384


class _OneWrite(http.client.HTTPConnection):
    """A request with a small ``bytes`` body goes out with its head in one write.

    ``http.client`` sends the head and then the body: two system calls and, over TLS, two records
    that the server decrypts and hands to its HTTP parser one at a time. On loopback, or whenever
    the server reads before the second write arrives, its event loop wakes twice and its
    application starts before the body is there. A kept connection's calls (the RA loop's answers,
    a renewal's next key and install) are small bodies: when the head and the body fit in one TLS
    record (:data:`ONE_WRITE_MOST` bytes) they leave in one write. Larger bodies (not copied to be
    joined), and files, iterables or chunked bodies, go out as ``http.client`` sends them."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]  # (not in the stubs)
            return
        # What http.client's own _send_output writes first (the head and the blank line), then the body.
        self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
        head = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
        del self._buffer[:]  # type: ignore[attr-defined]
        if len(head) + len(message_body) <= ONE_WRITE_MOST:
            self.send(head + message_body)
        else:
            self.send(head)
            self.send(message_body)


class _OneWriteHTTPS(_OneWrite, http.client.HTTPSConnection):
    """:class:`_OneWrite` over TLS."""


class KeptConnection:
    """One kept-alive connection (the standard library's ``http.client``) for a thread that sends
    the same small JSON call over and over, e.g. the RA loop's claims: a fifth of httpx's cost per
    call. The same TLS context, headers and answers as its :class:`HttpClient`: error answers and
    transport failures raise what :meth:`HttpClient.request` raises, with its messages; a
    kept-alive connection the server closed meanwhile is retried once on a fresh one, as there.
    Not thread-safe: one per thread."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        url = httpx.URL(client.base_url)
        self._https = url.scheme == "https"
        self._host = url.host
        self._port = url.port or (443 if self._https else 80)
        self._base_path = url.raw_path.decode().rstrip("/")
        self._bare = {**client._headers, "Connection": "keep-alive"}
        self._headers = {**self._bare, "Content-Type": "application/json"}
        self._conn: http.client.HTTPConnection | None = None
        self._connecting = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def json(self, method: str, path: str, body: Any, timeout: float | None = None) -> Any:
        """``body`` as JSON to ``path`` (under the client's base URL); the answer's JSON."""
        return self.call(method, path, json.dumps(body).encode(), timeout=timeout)

    def call(self, method: str, path: str, payload: bytes | None = None, content_type: str = "application/json",
             timeout: float | None = None) -> Any:
        """``payload`` (of ``content_type``; None: no body) to ``path``; the answer's JSON."""
        self._connecting = False
        fresh = self._conn is None
        try:
            try:
                status, reason, data = self._send(method, path, payload, content_type, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                if fresh:
                    raise
                self.close()  # a kept-alive connection the server closed meanwhile: one retry on a fresh one
                status, reason, data = self._send(method, path, payload, content_type, timeout)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self.client._transport_error(_as_httpx_error(exc, self._connecting)) from None
        if status >= 400:
            message = _error_text(data) or reason or f"HTTP {status}"
            error = self.client._error(STATUS_ERRORS.get(status, SignpeerError), f"{message} (HTTP {status})")
            error.status = status
            raise error
        try:
            return json.loads(data)
        except ValueError:
            raise ServiceUnavailableError(f"the answer of {self.client.base_url} to {method} {path} is not JSON "
                                          f"(HTTP {status})") from None

    def _send(self, method: str, path: str, payload: bytes | None, content_type: str,
              timeout: float | None) -> tuple[int, str, bytes]:
        conn = self._conn
        wait = timeout if timeout is not None else self.client._timeout
        if conn is None:
            if self._https:
                conn = _OneWriteHTTPS(self._host, self._port, timeout=wait, context=self.client._tls)
            else:
                conn = _OneWrite(self._host, self._port, timeout=wait)
            self._conn = conn
            self._connecting = True
            conn.connect()  # TCP and the TLS handshake (a timeout here is a ConnectTimeout, as httpx says)
            self._connecting = False
        elif conn.sock is not None:
            conn.sock.settimeout(wait)
        headers = self._headers
        if payload is None:
            headers = self._bare  # no body: no Content-Type (http.client sends Content-Length: 0 for a POST)
        elif content_type != "application/json":
            headers = {**headers, "Content-Type": content_type}
        conn.request(method, self._base_path + path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        return response.status, response.reason, data


def _error_text(data: bytes) -> str:
    """The server's ``{"error": ...}`` text of an error answer, else its body (as :func:`answer_message`)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):
        return str(parsed["error"])
    return data.decode("utf-8", "replace").strip()


def _as_httpx_error(exc: Exception, connecting: bool) -> httpx.HTTPError:
    """A standard-library transport failure as the httpx error :meth:`HttpClient._transport_error` reads."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(text) if connecting else httpx.ReadTimeout(text)
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.HTTPException, ConnectionResetError,
                        BrokenPipeError)):
        return httpx.RemoteProtocolError(text)
    if isinstance(exc, ssl.SSLEOFError) and not connecting:  # dropped after the handshake (as httpx's WriteError)
        return httpx.WriteError(text)
    return httpx.ConnectError(text)
