"""The one exception tree of signpeer.

Every error a user can cause is a subclass of :class:`SignpeerError`. Each class carries the
HTTP status it maps to (``status``) and the CLI exit code (``exit_code``), so the REST layer and
the command line translate errors in exactly one place each. Messages say what to do next.
"""

from __future__ import annotations


class SignpeerError(Exception):
    """Base of every signpeer error. Unexpected failures of our own code are not these."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(SignpeerError):
    """The configuration (worker properties, settings file) is wrong or incomplete."""

    status = 400


class PluginError(SignpeerError):
    """A plugin failed to load, or two plugins register the same type name."""


class BadRequestError(SignpeerError):
    """The request (HTTP body, CLI argument, uploaded file) is malformed."""

    status = 400


class RequestTooLargeError(BadRequestError):
    """The request body is over the configured limit."""

    status = 413


class ClientAbortError(BadRequestError):
    """The client closed the connection before its request was read in full (nginx's 499: no one
    reads the answer). Logged as the client's abort, never as an internal error."""

    status = 499


class UnknownWorkerError(SignpeerError):
    """No worker has the given id or name."""

    status = 404


class NotFoundError(SignpeerError):
    """Something other than a worker (a key alias, a rule, a queue entry) does not exist."""

    status = 404


class AuthenticationError(SignpeerError):
    """The client did not authenticate (no or wrong credentials)."""

    status = 401


class AuthorizationError(SignpeerError):
    """The client authenticated but is not allowed to do this."""

    status = 403


class ConflictError(SignpeerError):
    """The request contradicts the current state (e.g. a certificate for another key)."""

    status = 409


class CryptoTokenOfflineError(SignpeerError):
    """The crypto token is not activated, or cannot be reached."""

    status = 503


class WorkerOfflineError(SignpeerError):
    """The worker cannot sign right now (token offline, key missing, no certificate, ...)."""

    status = 503


class KeyNotFoundError(NotFoundError):
    """The crypto token has no key with the given alias."""


class CryptoTokenAuthenticationError(SignpeerError):
    """Activation failed: wrong password or PIN."""

    status = 403


class ServiceUnavailableError(SignpeerError):
    """A dependency (a CA, the RA queue) did not answer in time."""

    status = 503


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database cannot be used as asked: its file or directory is read-only ("data directory
    not writable"), it is damaged, or the disk is full. The message names the file and what to do;
    a server keeps signing (signing touches no database) and answers 503 to what needs a write."""


class TransportError(ServiceUnavailableError):
    """A call to another server got no answer (see :mod:`signpeer_core.httpclient`); the message
    names the URL and what to check."""


class ServerUnreachableError(TransportError):
    """No connection or no answer: connection refused, unknown host, timeout, connection dropped."""


class TLSError(TransportError):
    """TLS failed: the server's certificate is not trusted, the server refused the client
    certificate, or the TLS files (CA file, client certificate, key) cannot be loaded."""


class TimeStampError(ServiceUnavailableError):
    """A signature time-stamp could not be obtained (the TSA refused, failed or did not answer in time)."""
