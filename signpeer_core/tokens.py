"""The crypto token interface every key store implements (soft keystores, PKCS#11 HSMs, ...).

A token holds key pairs by alias. It is created from the properties of the worker that owns
it (``CRYPTOTOKEN_IMPLEMENTATION_CLASS`` names the type) and shared by every worker that names
that worker in ``CRYPTOTOKEN``. Private keys are returned as ``cryptography`` private-key
objects; a token whose keys never leave the hardware returns subclasses of those interfaces
that forward ``sign()`` to the device, so signers, CSRs and CMS need no special case.

Signers get keys through :meth:`CryptoToken.acquire`, which one-time key workers override to
make a fresh key and certificate per request, and :meth:`CryptoToken.release`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from cryptography import x509

from signpeer_core.config import WorkerConfig
from signpeer_core.errors import CryptoTokenOfflineError, KeyNotFoundError
from signpeer_core.keys import PrivateKey, PublicKey, SignatureAlgorithm, sign

if TYPE_CHECKING:
    from signpeer_core.services import Services

T = TypeVar("T")

#: A signature made by a prepared signer (:meth:`CryptoToken.prepared_signer`): the signature
#: bytes, and the seconds the device took (for the token-duration metric).
PreparedSignature = tuple[bytes, float]
#: ``sign(data)``: the signature of ``data``, or None when it cannot be made on the caller's
#: thread now (the caller then takes the general path, which also reports every error).
PreparedSigner = Callable[[bytes], PreparedSignature | None]


def key_map_signer(keys: Callable[[], Mapping[str, PrivateKey]], alias: str,
                   algorithm: SignatureAlgorithm) -> PreparedSigner:
    """The prepared signer of a token holding its keys in memory (a map by alias, replaced whole on
    activation, reload and deactivation): ``keys()`` gives the current map on every call, so the
    function follows those by itself; a key not in the map (not yet loaded, removed, the token
    deactivated) gives None, and the general path looks it up and reports why."""

    def signer(data: bytes) -> PreparedSignature | None:
        key = keys().get(alias)
        if key is None:
            return None
        started = perf_counter()
        signature = sign(key, algorithm, data)
        return signature, perf_counter() - started

    return signer


@dataclass(frozen=True)
class PropertyDoc:
    """One property a token or worker reads: for docs and ``signpeer plugins``."""

    name: str
    default: str
    meaning: str
    #: A password, PIN or other secret: masked wherever properties are shown (the Auditor role,
    #: the audit log, ``getconfig``) and encrypted in the database (see :mod:`signpeer_core.secrets`).
    secret: bool = False


@dataclass
class KeyInfo:
    """One entry of a token, as ``testkey``/``listkeys`` and the Admin Web show it."""

    alias: str
    description: str  # e.g. "EC secp256r1"
    certificate: x509.Certificate | None = None


@dataclass
class KeyHandle:
    """What a signer signs with for one request: the key and the certificate chain."""

    alias: str
    private_key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)
    context: Any = None  # token-private state for release()


@dataclass
class RequestInfo:
    """What a token may need to know about the signing request (one-time keys use it)."""

    request_id: str
    worker_name: str
    username: str | None = None
    client_certificate: x509.Certificate | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: The verified token claims of the request (:attr:`SignRequest.claims`), if any.
    claims: dict[str, Any] | None = None


class CryptoToken(ABC):
    """Base class of crypto tokens. Subclasses set ``type_name`` and implement the key methods."""

    type_name: ClassVar[str] = ""
    implementation_aliases: ClassVar[tuple[str, ...]] = ()
    properties: ClassVar[tuple[PropertyDoc, ...]] = ()
    #: True when operations block (HSM round trips): the server then runs them in a thread.
    blocking: ClassVar[bool] = False

    def __init__(self, worker_id: int, config: WorkerConfig, services: Services) -> None:
        self.worker_id = worker_id
        self.config = config
        self.services = services

    # -- life cycle ------------------------------------------------------------------------
    @abstractmethod
    def activate(self, authentication_code: str) -> None:
        """Unlock the token; :class:`CryptoTokenAuthenticationError` on a wrong code."""

    @abstractmethod
    def deactivate(self) -> None:
        """Lock the token and forget unlocked keys."""

    @property
    @abstractmethod
    def is_active(self) -> bool:
        """True when keys can be used."""

    def auto_activate(self) -> None:  # noqa: B027 - optional: a no-op for tokens without a PIN
        """Activate with the configured password/PIN, if any. Called when the token is created."""

    def offline_reasons(self) -> list[str]:
        """Why the token cannot be used; empty when it can."""
        return [] if self.is_active else ["crypto token not activated (signpeer activatecryptotoken <worker>)"]

    def close(self) -> None:  # noqa: B027 - optional: a no-op for tokens that hold nothing
        """Release resources (sessions, files) when the worker is unloaded."""

    def same_configuration(self, config: WorkerConfig) -> bool:
        """True when a reload can keep this instance (and its activation) for ``config``."""
        return config == self.config

    # -- keys ------------------------------------------------------------------------------
    @abstractmethod
    def key_aliases(self) -> list[str]:
        """Aliases of the key pairs in the token."""

    @abstractmethod
    def generate_key(self, alias: str, keyalg: str, keyspec: str) -> None:
        """Generate a key pair under ``alias``; a taken alias is a :class:`ConflictError`."""

    @abstractmethod
    def remove_key(self, alias: str) -> None:
        """Delete a key pair; :class:`KeyNotFoundError` if there is none."""

    @abstractmethod
    def private_key(self, alias: str) -> PrivateKey:
        """The private key (or a handle forwarding to the device); :class:`KeyNotFoundError`."""

    def public_key(self, alias: str) -> PublicKey:
        return self.private_key(alias).public_key()

    def certificate_chain(self, alias: str) -> list[x509.Certificate]:
        """The chain stored *in the token* for ``alias`` (a placeholder for new keys)."""
        return []

    def import_certificate_chain(self, alias: str, chain: list[x509.Certificate]) -> None:
        """Store a chain in the token next to the key (``importcertificatechain``)."""
        raise NotImplementedError(f"{self.type_name} cannot store certificates in the token")

    def key_infos(self) -> list[KeyInfo]:
        out = []
        for alias in self.key_aliases():
            from signpeer_core.keys import describe_key

            chain = self.certificate_chain(alias)
            out.append(KeyInfo(alias, describe_key(self.public_key(alias)), chain[0] if chain else None))
        return out

    def require_active(self) -> None:
        if not self.is_active:
            raise CryptoTokenOfflineError(
                f"crypto token of worker {self.worker_id} is not activated; "
                f"run signpeer activatecryptotoken {self.worker_id}"
            )

    def has_key(self, alias: str) -> bool:
        try:
            self.private_key(alias)
        except (KeyNotFoundError, CryptoTokenOfflineError):
            return False
        return True

    # -- signing ---------------------------------------------------------------------------
    async def acquire(self, alias: str, chain: list[x509.Certificate], request: RequestInfo) -> KeyHandle:
        """The key to sign one request with. One-time key tokens override this."""
        return KeyHandle(alias=alias, private_key=self.private_key(alias), chain=chain)

    async def release(self, handle: KeyHandle) -> None:  # noqa: B027 - optional: a no-op for stored keys
        """Called after signing, on success and failure alike."""

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a signing call of a ``blocking`` token off the event loop. A token may override
        this, e.g. to run a short device call inline when that is cheaper than a thread hop.
        The thread is one of :mod:`signpeer_core.handoff`'s (``run_in_thread`` in the API)."""
        from signpeer_core.handoff import run

        return await run(fn, *args)

    def prepared_signer(self, alias: str, algorithm: SignatureAlgorithm) -> PreparedSigner | None:
        """A function bound once to the key ``alias`` and ``algorithm`` that signs data inline:
        the hot path of a signer whose result is the bare signature (``PlainSigner``).

        The function returns None whenever it cannot sign cheaply on the caller's thread now
        (the key not yet looked up, the device busy or slow, the session lost, any device
        error): the signer then takes the general path (:meth:`acquire`, :meth:`run_blocking`),
        which looks the key up again, reconnects and reports errors as before. It must never
        sign with a key or session that the token has let go (deactivation, removal, a reopened
        session). None here: the token has no such path and signers always take the general one.
        """
        return None

    #: True for tokens that need no signer certificate (one-time keys bring their own).
    provides_certificates: ClassVar[bool] = False


@runtime_checkable
class SessionKeyToken(Protocol):
    """A token that can make short-lived key pairs that never reach its storage.

    One-time key workers use it (``KEYSTORAGE=SESSION``): PKCS#11 session objects, which vanish
    when the session or the process ends. A token type declares the capability by having both
    methods; ``isinstance(token, SessionKeyToken)`` tells.
    """

    def generate_session_key(self, alias: str, keyalg: str, keyspec: str,
                             token_object: bool = False) -> PrivateKey:
        """A new key pair under ``alias``, as a key object whose ``sign`` runs in the token."""
        ...

    def destroy_session_key(self, alias: str) -> None:
        """Delete the pair :meth:`generate_session_key` made; no error when it is gone already."""
        ...


@runtime_checkable
class KeystoreCreator(Protocol):
    """A token whose key store (a file, say) is created only when asked: a configured store that
    is not there is an error, never silently replaced by an empty one. ``signpeer generatekey
    -create`` and ``signpeer init`` ask through ``WorkerAdmin.create_keystore``."""

    def create_keystore(self, authentication_code: str = "") -> bool:
        """Create the empty store protected by ``authentication_code`` (or the configured
        password) and activate with it; False when it exists already (nothing changed)."""
        ...

