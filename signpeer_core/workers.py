"""Workers: the base class, the request and response of one signing request, the status.

A worker is built from its properties: ``IMPLEMENTATION_CLASS`` names a registered worker
type, ``TYPE`` says ``PROCESSABLE`` (signs) or ``CRYPTO_WORKER`` (only holds a token). A worker
has a crypto token of its own (``CRYPTOTOKEN_IMPLEMENTATION_CLASS``) or uses the token of the
worker named in ``CRYPTOTOKEN``. The :class:`~signpeer_core.runtime.Runtime` builds and holds
them; problems found while loading do not stop the server: they make that worker OFFLINE with
reasons that say what to fix.
"""

from __future__ import annotations

import copy
from abc import ABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509

from signpeer_core.config import CRYPTO_WORKER, PROCESSABLE, WorkerConfig
from signpeer_core.errors import ConfigurationError, CryptoTokenOfflineError, WorkerOfflineError
from signpeer_core.tokens import CryptoToken, PreparedSigner, PropertyDoc

if TYPE_CHECKING:
    from signpeer_core.auth import Authorizer
    from signpeer_core.runtime import Runtime
    from signpeer_core.services import Services


#: The default of ``SignRequest(metadata=...)``: a new empty dictionary for each request.
_NEW_DICT: Any = object()


@dataclass(init=False)
class SignRequest:
    """One request to a worker, whatever transport it came through.

    A dataclass (fields, equality, repr, ``dataclasses.replace``) whose ``__init__`` is written
    out: it stores a field only when it differs from its default, which the class holds, so that
    building one (once per request) costs less than the generated ``__init__`` with its
    ``default_factory``. Reading and setting any field, and attributes of a plugin's own, work
    as on any instance."""

    data: bytes
    request_id: str
    metadata: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    client_certificate: x509.Certificate | None = None
    remote_address: str | None = None
    #: The verified claims of the caller's token (set by a bearer-token authorizer such as the JWT
    #: authorizer; None otherwise). Workers read them, e.g. one-time keys put them in certificates.
    claims: dict[str, Any] | None = None
    #: The key identifier of the trusted CA that issued ``client_certificate`` (clientcas.py).
    client_issuer_key_id: str = ""

    def __init__(self, data: bytes, request_id: str, metadata: dict[str, str] = _NEW_DICT,
                 username: str | None = None, client_certificate: x509.Certificate | None = None,
                 remote_address: str | None = None, claims: dict[str, Any] | None = None,
                 client_issuer_key_id: str = "") -> None:
        self.data = data
        self.request_id = request_id
        self.metadata = {} if metadata is _NEW_DICT else metadata
        # The other fields' defaults are class attributes: stored only when given otherwise.
        if username is not None:
            self.username = username
        if client_certificate is not None:
            self.client_certificate = client_certificate
        if remote_address is not None:
            self.remote_address = remote_address
        if claims is not None:
            self.claims = claims
        if client_issuer_key_id:
            self.client_issuer_key_id = client_issuer_key_id


@dataclass
class SignResponse:
    """What a worker returns: the result bytes and the certificate that signed."""

    data: bytes
    request_id: str
    archive_id: str
    signer_certificate: x509.Certificate | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerStatus:
    """ACTIVE, or OFFLINE with the reasons (SignServer's "Worker status")."""

    worker_id: int
    name: str
    active: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return "ACTIVE" if self.active else "OFFLINE"


class Worker(ABC):  # noqa: B024 - every method has a default; ABCMeta lets plugin bases add abstract ones
    """Base of all workers. Subclasses set ``type_name`` and override :meth:`load` and :meth:`process`.

    Requests reach :meth:`process` through the pipeline (:mod:`signpeer_core.pipeline`), which
    has authorized them and called :meth:`check_ready` first.
    """

    type_name: ClassVar[str] = ""
    implementation_aliases: ClassVar[tuple[str, ...]] = ()
    properties: ClassVar[tuple[PropertyDoc, ...]] = ()
    #: The signer certificate chain (leaf first) of workers that sign with a certificate; None for
    #: workers that do not (crypto workers). Signers set it when they resolve their key.
    chain: list[x509.Certificate] | None = None
    #: SignServer TYPE this implementation expects when TYPE is not set.
    default_worker_type: ClassVar[str] = PROCESSABLE

    def __init__(self, config: WorkerConfig, services: Services) -> None:
        self.id = config.worker_id
        self.config = config
        self.name = config.name
        self.services = services
        self.worker_type = config.get_str("TYPE", self.default_worker_type).upper()
        self.token: CryptoToken | None = None
        self.token_owner: str | None = None  # name of the worker that holds the token
        self.fatal_errors: list[str] = []
        self.authorizer: Authorizer | None = None
        try:  # the configuration of a loaded worker never changes (a reload builds a new one)
            self._disabled = config.get_bool("DISABLED")
        except ConfigurationError:
            self._disabled = False

    def load(self, runtime: Runtime) -> None:
        """Read properties and resolve the token; record problems in ``fatal_errors``."""
        if self.worker_type not in (PROCESSABLE, CRYPTO_WORKER):
            self.fatal_errors.append(f"TYPE must be PROCESSABLE or CRYPTO_WORKER, not '{self.worker_type}'")
        self.token = runtime.token_for(self)
        if type(self).process is not Worker.process:
            # Every worker that processes requests checks who asks (AUTHTYPE, CLIENTCERT by default).
            from signpeer_core.auth import build_authorizer

            self.authorizer = build_authorizer(self.config, self.services)

    def with_config(self, config: WorkerConfig) -> Worker:
        """A copy of this loaded worker with ``config``, which differs from its own only in
        properties no build reads (:data:`~signpeer_core.runtime.UNBUILT_PROPERTIES`): what the
        runtime puts in its place instead of building it again. A new object, so that what is
        cached per loaded worker (the peer endpoint's key bindings) is made again; requests in
        flight finish on this one. It shares this one's token and what ``load`` made."""
        worker = copy.copy(self)
        worker.config = config
        worker.fatal_errors = list(self.fatal_errors)  # its own: a refresh of the copy may add to it
        return worker

    def refresh(self) -> None:  # noqa: B027 - optional: a no-op for workers without a key
        """Re-resolve what depends on the token (key, chain) after it was activated; the runtime
        calls it on the workers using a token that became active. Nothing by default."""

    def crypto_token(self) -> CryptoToken | None:
        """The token other workers get when they name this one in ``CRYPTOTOKEN``."""
        return self.token

    @property
    def disabled(self) -> bool:
        return self._disabled

    def offline_reasons(self) -> list[str]:
        """Why the worker cannot process requests now; empty when it can (SignServer's "Worker status").

        The one place a worker's status comes from: :meth:`status`, the REST worker list, the
        health check, ``getstatus`` and the Admin Web all read it. Computed from memory only (load
        errors, ``DISABLED``, the token's own :meth:`~CryptoToken.offline_reasons`): a status read
        never calls into a device. Subclasses add their reasons to ``super().offline_reasons()``.
        """
        reasons = list(self.fatal_errors)
        if self._disabled:
            reasons.append("worker is disabled (DISABLED=true)")
        if self.token is not None:
            reasons.extend(self.token.offline_reasons())
        return reasons

    def status(self) -> WorkerStatus:
        reasons = self.offline_reasons()
        return WorkerStatus(self.id, self.name, not reasons, reasons)

    def check_ready(self) -> None:
        """Refuse a request the worker cannot process now: load errors, ``DISABLED``, a worker
        that does not process, an inactive token. Called by the pipeline before :meth:`process`;
        memory only and cheap (a few attribute reads when the worker is ready)."""
        if self.fatal_errors or self._disabled:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(self.offline_reasons()))
        if type(self).process is Worker.process:
            raise WorkerOfflineError(self._not_processing())
        token = self.token
        if token is not None and not token.is_active:
            raise CryptoTokenOfflineError(
                f"worker '{self.name}' is offline: crypto token not activated "
                f"(signpeer activatecryptotoken {self.token_owner or self.name})")

    async def process(self, request: SignRequest) -> SignResponse:
        raise WorkerOfflineError(self._not_processing())

    def ready_prepared(self) -> PreparedSigner | None:
        """A function that signs a request without options inline and whose result is the whole
        answer (the bare signature, :meth:`CryptoToken.prepared_signer`), when :meth:`check_ready`
        would pass and :meth:`process` would take it now; None (the default) when the request
        must go through :meth:`process`. :mod:`signpeer_core.directsigning` asks it per request."""
        return None

    def _not_processing(self) -> str:
        return (f"worker '{self.name}' does not process requests: its implementation "
                f"{type(self).type_name or type(self).__name__} holds a crypto token for other workers; "
                "send requests to a signer")


class BrokenWorker(Worker):
    """Stands in for a worker whose implementation could not be created; always OFFLINE."""

    type_name = "BrokenWorker"
