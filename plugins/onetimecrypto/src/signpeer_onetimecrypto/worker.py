"""``OneTimeCryptoWorker``: a crypto worker whose token gives every signing request a new key.

A signer that names this worker in ``CRYPTOTOKEN`` gets :class:`OneTimeCryptoToken`. Its
:meth:`~OneTimeCryptoToken.acquire` runs the one-time cycle (spec §7.4):

1. a fresh key pair in the source token (the crypto worker named by this worker's own
   ``CRYPTOTOKEN``; see :mod:`.keysource` for session objects, software keys, token objects);
2. the templates filled with the request's user name, transaction id, metadata and the claims
   of the token it was authorized with;
3. a PKCS#10 request signed by the new key with ``CERTSIGNATUREALGORITHM``;
4. the certificate from the CA connector, waited for at most ``CACONNECTOR_WAITTIMEOUT``;
5. the certificate checked: the one-time key's public key, valid now, valid long enough.

:meth:`~OneTimeCryptoToken.release` (called by the signer in a ``finally``) deletes the key.
If anything in the cycle fails — a CA error, the timeout, or the client going away (the
request task is cancelled) — :meth:`acquire` deletes the key itself before it re-raises,
because the signer only releases handles it received. Deletion runs shielded from
cancellation, so a disconnect cannot skip it.

Configuration problems (an unknown ``${variable}``, a bad DN, a missing connector property)
are found when the worker loads and make it OFFLINE with the reason.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import anyio.to_thread
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from signpeer_core.api import (
    CRYPTO_WORKER,
    BadRequestError,
    CAConnector,
    CARefusedError,
    CertificateRequest,
    ConfigurationError,
    CryptoToken,
    CryptoTokenOfflineError,
    KeyHandle,
    KeySpec,
    PropertyDoc,
    RequestInfo,
    ServiceUnavailableError,
    SignpeerError,
    Worker,
    WorkerOfflineError,
    build_csr,
    escape_dn_value,
    format_dn,
    parse_dn,
    parse_key_spec,
    public_key_der,
    signature_algorithm,
    tracing_recording,
    tracing_span,
)
from signpeer_onetimecrypto.admission import DEFAULT_MAX_WAITING, WaitingLimit
from signpeer_onetimecrypto.keysource import (
    KeyPool,
    KeySource,
    OneTimeKey,
    TokenObjectKeys,
    make_source,
    node_tag,
)
from signpeer_onetimecrypto.metrics import STAGES, ca_timeouts
from signpeer_onetimecrypto.onetrip import prepare_in_one_trip, run_then_delete
from signpeer_onetimecrypto.pools import close_pools as close_pools  # re-exported: tests, benches, other plugins' tests
from signpeer_onetimecrypto.pools import existing_pool, pool_for
from signpeer_onetimecrypto.ra import PeersRAConnector
from signpeer_onetimecrypto.templates import (
    Template,
    TimeSpec,
    escape_san_value,
    parse_san,
    parse_template,
    parse_time,
    template_values,
)

if TYPE_CHECKING:
    from signpeer_core.api import Runtime, Services, WorkerConfig

log = logging.getLogger("signpeer.onetime")
T = TypeVar("T")

DEFAULT_KEYALG = "ECDSA"
DEFAULT_KEYSPEC = "secp256r1"
DEFAULT_PREFIX = "onetime-"
DEFAULT_WAIT_TIMEOUT = 30.0
DEFAULT_USERNAME_PATTERN = "onetime-${transactionId}"
DEFAULT_SUBJECTDN_PATTERN = "CN=onetime-${transactionId}"
#: A certificate must stay valid at least this long after it arrives, to cover the signing.
MIN_REMAINING_VALIDITY = dt.timedelta(seconds=30)



class StageStats:
    """Durations of the one-time cycle's stages in this process (the last 10,000 of each)."""

    STAGES = ("keygen", "csr", "ca", "delete")

    def __init__(self) -> None:
        self.samples: dict[str, collections.deque[float]] = {s: collections.deque(maxlen=10_000) for s in self.STAGES}

    def record(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(seconds)
        STAGES[stage].observe(seconds)


class OneTimeCryptoToken(CryptoToken):
    """What signers get from a :class:`OneTimeCryptoWorker`: a new key and certificate per request."""

    type_name = "OneTimeCryptoToken"
    provides_certificates = True

    def __init__(self, worker: OneTimeCryptoWorker) -> None:
        super().__init__(worker.id, worker.config, worker.services)
        self.worker = worker

    @property
    def blocking(self) -> bool:  # type: ignore[override]  # per worker here, a ClassVar elsewhere
        # Signing with an HSM one-time key is an HSM call: signers must leave the event loop.
        return self.worker.keys_blocking

    # -- life cycle: the source token's ------------------------------------------------------
    def _source(self) -> CryptoToken:
        if self.worker.token is None:
            raise CryptoTokenOfflineError(f"one-time worker '{self.worker.name}' has no source token: "
                                          + "; ".join(self.worker.fatal_errors))
        return self.worker.token

    def activate(self, authentication_code: str) -> None:
        self._source().activate(authentication_code)

    def deactivate(self) -> None:
        self._source().deactivate()

    @property
    def is_active(self) -> bool:
        # Only the source token's activation: configuration problems are reported by
        # offline_reasons() and refused by acquire() with their own words, not as
        # "crypto token not activated".
        token = self.worker.token
        if token is None:
            # No usable source token always comes with a load error: let acquire() report it.
            return bool(self.worker.fatal_errors)
        return token.is_active

    def offline_reasons(self) -> list[str]:
        return [f"one-time crypto worker '{self.worker.name}': {r}" for r in self.worker.offline_reasons()]

    # -- no permanent keys ------------------------------------------------------------------
    def _no_keys(self) -> SignpeerError:
        return BadRequestError(f"'{self.worker.name}' is a OneTimeCryptoWorker: it keeps no keys (each signing "
                               f"request gets a new one); manage keys in the source token "
                               f"'{self.worker.config.get_str('CRYPTOTOKEN')}'")

    def key_aliases(self) -> list[str]:
        return []

    def generate_key(self, alias: str, keyalg: str, keyspec: str) -> None:
        raise self._no_keys()

    def remove_key(self, alias: str) -> None:
        raise self._no_keys()

    def private_key(self, alias: str) -> NoReturn:
        raise self._no_keys()

    # -- the one-time cycle -----------------------------------------------------------------
    async def acquire(self, alias: str, chain: list[x509.Certificate], request: RequestInfo) -> KeyHandle:
        worker = self.worker
        # Memory only: load errors, DISABLED, then activation (with words for each).
        reasons = list(worker.fatal_errors) + (["worker is disabled (DISABLED=true)"] if worker.disabled else [])
        if reasons:
            raise WorkerOfflineError(f"one-time crypto worker '{worker.name}' is offline: " + "; ".join(reasons))
        if worker.token is None or not worker.token.is_active:
            raise CryptoTokenOfflineError(f"one-time crypto worker '{worker.name}' is offline: the crypto token of "
                                          f"'{worker.config.get_str('CRYPTOTOKEN')}' is not activated (signpeer "
                                          f"activatecryptotoken {worker.config.get_str('CRYPTOTOKEN')})")
        source, connector = worker.source, worker.connector
        if source is None or connector is None:  # set by every load without fatal errors
            raise WorkerOfflineError(f"one-time crypto worker '{worker.name}' is not loaded")
        with worker.waiting.admitted(worker.name):  # MAX_WAITING: shed at once, before any key is made
            return await self._cycle(source, connector, request)

    async def _cycle(self, source: KeySource, connector: CAConnector, request: RequestInfo) -> KeyHandle:
        """Key, CSR, certificate: the one-time cycle of :meth:`acquire` (which checked the worker)."""
        worker = self.worker
        stats = worker.stats
        pool = worker.pool if worker.pool is not None or not worker.pool_size else worker.ensure_pool()
        waiting: asyncio.Event | None = None
        if worker.keys_blocking and not tracing_recording():
            # Key, CSR and (RA mode) the queue write in one trip to a thread: each trip costs
            # the event loop more than those device calls (with tracing on, the stages' spans
            # below need them apart).
            key, creq, waiting = await prepare_in_one_trip(worker, source, connector, pool, request)
            t2 = time.perf_counter()
        else:
            t0 = time.perf_counter()
            with tracing_span("signpeer.onetime.keygen", {"signpeer.key.spec": worker.spec.describe(),
                                                          "signpeer.key.storage": source.description}) as span:
                pooled = pool.take() if pool is not None else None
                span.set_attribute("signpeer.key.pooled", pooled is not None)
                if pooled is not None:
                    key = pooled
                elif worker.keys_blocking or worker.spec.kind == "RSA":
                    key = await _generate_in_thread(source)
                else:
                    key = source.generate()
            t1 = time.perf_counter()
            stats.record("keygen", t1 - t0)
            try:
                with tracing_span("signpeer.onetime.csr"):
                    if worker.keys_blocking:
                        creq = await anyio.to_thread.run_sync(worker.certificate_request, key, request)
                    else:
                        creq = worker.certificate_request(key, request)
            except BaseException:
                await self._destroy(key)
                raise
            t2 = time.perf_counter()
            stats.record("csr", t2 - t1)
        try:
            try:
                with anyio.fail_after(worker.wait_timeout), tracing_span(
                        "signpeer.onetime.ca", {"signpeer.ca_connector": type(connector).__name__,
                                                "signpeer.ca_connector.wait_timeout": worker.wait_timeout}):
                    if waiting is not None and isinstance(connector, PeersRAConnector):  # queued in the trip
                        got = await connector.wait(creq, waiting)
                    else:
                        got = await connector.request_certificate(creq)
            except TimeoutError:
                ca_timeouts.labels(worker.name).inc()
                raise ServiceUnavailableError(
                    connector.timeout_message(creq, worker.wait_timeout)
                    + "; the one-time key was deleted") from None
            stats.record("ca", time.perf_counter() - t2)
            check_certificate(got, key)
            return KeyHandle(alias=key.alias, private_key=key.private_key, chain=got, context=key)
        except BaseException:
            await self._destroy(key)
            raise

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """The signature with a one-time key, as the source token runs its calls (inline or in a
        thread: its choice); the key is deleted right after, in the same call (tracing off: the
        deletion's span belongs under the release)."""
        source = self._source()
        key = next((a.context for a in args if isinstance(a, KeyHandle) and isinstance(a.context, OneTimeKey)), None)
        if key is None or tracing_recording():
            return await source.run_blocking(fn, *args)
        return await source.run_blocking(run_then_delete, self.worker.stats, key, fn, *args)

    async def release(self, handle: KeyHandle) -> None:
        key = handle.context
        if isinstance(key, OneTimeKey):
            await self._destroy(key)

    async def _destroy(self, key: OneTimeKey) -> None:
        if key.destroyed:  # deleted with its signature (run_blocking)
            return
        t0 = time.perf_counter()
        with tracing_span("signpeer.onetime.delete"):
            if key.source.blocking:
                # Shielded: a cancelled request (client gone) must still delete its HSM key. The
                # deletion runs in its own task, so a cancellation only stops the waiting.
                await asyncio.shield(asyncio.ensure_future(anyio.to_thread.run_sync(key.destroy)))
            else:
                key.destroy()
        self.worker.stats.record("delete", time.perf_counter() - t0)


async def _generate_in_thread(source: KeySource) -> OneTimeKey:
    """Generate in a worker thread; if the request is cancelled meanwhile, the key that the
    thread still produces is deleted as soon as it exists (nobody else would ever see it).

    ``anyio.CancelScope(shield=True)`` does not hold off a plain ``Task.cancel()`` (a server
    shutting down, a disconnect), so the thread call runs as its own task under ``asyncio.shield``.
    """
    future = asyncio.ensure_future(anyio.to_thread.run_sync(source.generate))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def orphan(done: asyncio.Future[OneTimeKey]) -> None:
            if not done.cancelled() and done.exception() is None:
                asyncio.ensure_future(anyio.to_thread.run_sync(done.result().destroy))

        future.add_done_callback(orphan)
        raise


def check_certificate(chain: list[x509.Certificate], key: OneTimeKey) -> None:
    """The certificate must be for the one-time key, valid now, and valid long enough."""
    if not chain:
        raise CARefusedError("the CA returned no certificate")
    leaf = chain[0]
    if public_key_der(leaf) != public_key_der(key.private_key.public_key()):
        raise CARefusedError(f"the CA returned a certificate ('{format_dn(leaf.subject)}') for another public key "
                             "than the one-time key's; it was not used")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_before_utc > now:
        raise CARefusedError(f"the CA returned a certificate valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} "
                             "UTC; check CERTIFICATESTARTTIME and the clocks")
    if leaf.not_valid_after_utc < now + MIN_REMAINING_VALIDITY:
        raise CARefusedError(f"the CA returned a certificate that expires at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} "
                             f"UTC, too soon to sign with (at least {MIN_REMAINING_VALIDITY.seconds} s are needed); "
                             "check CERTIFICATEENDTIME")


def _username(info: RequestInfo) -> str | None:
    if info.username:
        return info.username
    cert = info.client_certificate
    if cert is None:
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else format_dn(cert.subject)


class OneTimeCryptoWorker(Worker):
    """Crypto worker for one-time keys (SignServer's OneTimeCryptoWorker, spec §7)."""

    type_name = "OneTimeCryptoWorker"
    implementation_aliases = ("org.signserver.module.onetime.cryptoworker.OneTimeCryptoWorker",)
    default_worker_type = CRYPTO_WORKER
    properties = (
        PropertyDoc("CRYPTOTOKEN", "— (required)", "crypto worker whose token makes the one-time keys (PKCS#11 or soft)"),
        PropertyDoc("KEYALG", DEFAULT_KEYALG, "algorithm of the one-time keys: ECDSA, RSA or Ed25519"),
        PropertyDoc("KEYSPEC", DEFAULT_KEYSPEC, "key spec: a curve (secp256r1, secp384r1) or RSA bits (2048)"),
        PropertyDoc("KEYALIAS_PREFIX", DEFAULT_PREFIX, "alias prefix of one-time keys in the token"),
        PropertyDoc("KEYSTORAGE", "SESSION", "SESSION: PKCS#11 session objects (software keys for soft tokens); "
                    "TOKEN: token objects, leftovers swept at start"),
        PropertyDoc("KEYPOOL_SIZE", "0", "keys generated ahead in the background (for RSA); 0 = no pool"),
        PropertyDoc("CACONNECTOR_IMPLEMENTATION", "— (required)", "SelfSignedCAConnector, LocalCAConnector, "
                    "PeersRAConnector or a SignServer class name"),
        PropertyDoc("CERTSIGNATUREALGORITHM", "by KEYALG", "algorithm that signs the CSR (and self-signed certificates)"),
        PropertyDoc("CANAME", "—", "CA name passed to the CA; in RA mode the RA queue (without it: queue 'default', "
                    "the CA chooses the CA)"),
        PropertyDoc("ENDENTITYPROFILE", "—", "end entity profile name passed to the CA"),
        PropertyDoc("CERTIFICATEPROFILE", "—", "certificate profile name passed to the CA"),
        PropertyDoc("USERNAME_PATTERN", DEFAULT_USERNAME_PATTERN, "end entity user name template"),
        PropertyDoc("SUBJECTDN_PATTERN", DEFAULT_SUBJECTDN_PATTERN, "subject DN template"),
        PropertyDoc("SUBJECTALTNAME_PATTERN", "—", "SAN template: rfc822Name=, dNSName=, uri=, ipaddress=, upn=, "
                    "guid=, directoryName= (comma-separated)"),
        PropertyDoc("CERTIFICATESTARTTIME", "now - 10 min", "days:hours:minutes relative, or yyyy-MM-dd HH:mm:ssZZ"),
        PropertyDoc("CERTIFICATEENDTIME", "CA's choice (730 days)", "days:hours:minutes relative, or yyyy-MM-dd HH:mm:ssZZ"),
        PropertyDoc("CACONNECTOR_WAITTIMEOUT", "30", "seconds a signing request waits for its certificate"),
        PropertyDoc("MAX_WAITING", str(DEFAULT_MAX_WAITING), "signing requests in the one-time cycle at once per "
                    "server process; more are answered 503 with Retry-After at once; 0 = no limit"),
    )

    def __init__(self, config: WorkerConfig, services: Services) -> None:
        super().__init__(config, services)
        self.onetime_token = OneTimeCryptoToken(self)
        self.connector: CAConnector | None = None
        self.source: KeySource | None = None
        self.pool: KeyPool | None = None
        self.spec = KeySpec("EC", curve="secp256r1")
        self.stats = StageStats()
        self.wait_timeout = DEFAULT_WAIT_TIMEOUT
        self.pool_size = 0
        self.waiting = WaitingLimit()
        self.prefix = ""  # KEYALIAS_PREFIX once the key settings loaded; empty: they did not

    @property
    def keys_blocking(self) -> bool:
        return self.source is not None and self.source.blocking

    def crypto_token(self) -> CryptoToken:
        # Always returned, so signers load and show this worker's problems as their reasons.
        return self.onetime_token

    def offline_reasons(self) -> list[str]:
        reasons = super().offline_reasons()
        return reasons + self.connector.offline_reasons() if self.connector is not None else reasons

    # -- loading ------------------------------------------------------------------------------
    def load(self, runtime: Runtime) -> None:
        try:
            super().load(runtime)
        except SignpeerError as exc:
            self.fatal_errors.append(exc.message)
        for check in (self._load_token, self._load_keys, self._load_templates, self._load_connector,
                      self._load_source):
            try:
                check()
            except SignpeerError as exc:
                self.fatal_errors.append(exc.message)

    def _load_token(self) -> None:
        if not self.config.get_str("CRYPTOTOKEN"):
            raise ConfigurationError("CRYPTOTOKEN is not set: name the crypto worker whose token makes the one-time "
                                     "keys (a PKCS#11 or soft token)")
        if isinstance(self.token, OneTimeCryptoToken):
            raise ConfigurationError(f"CRYPTOTOKEN names '{self.token.worker.name}', another OneTimeCryptoWorker; "
                                     "name a crypto worker with a PKCS#11 or soft token")

    def _load_keys(self) -> None:
        cfg = self.config
        self.keyalg = cfg.get_str("KEYALG", DEFAULT_KEYALG)
        self.keyspec = cfg.get_str("KEYSPEC", "" if self.keyalg.upper() in ("ED25519", "EDDSA") else DEFAULT_KEYSPEC)
        try:
            self.spec = parse_key_spec(self.keyalg, self.keyspec)
        except BadRequestError as exc:
            raise ConfigurationError(f"KEYALG/KEYSPEC: {exc.message}") from None
        self.prefix = cfg.get_str("KEYALIAS_PREFIX", DEFAULT_PREFIX)
        default_alg = {"RSA": "SHA256withRSA", "EC": "SHA256withECDSA", "Ed25519": "Ed25519"}[self.spec.kind]
        alg = signature_algorithm(cfg.get_str("CERTSIGNATUREALGORITHM", default_alg))
        if alg.kind != self.spec.kind or alg.prehashed:
            raise ConfigurationError(f"CERTSIGNATUREALGORITHM {alg.name} cannot sign with a {self.spec.describe()} key; "
                                     f"use e.g. {default_alg}")
        self.csr_algorithm = alg.name
        self.wait_timeout = cfg.get_float("CACONNECTOR_WAITTIMEOUT", DEFAULT_WAIT_TIMEOUT)
        if self.wait_timeout <= 0:
            raise ConfigurationError("CACONNECTOR_WAITTIMEOUT must be a positive number of seconds")
        self.pool_size = cfg.get_int("KEYPOOL_SIZE", 0)
        if self.pool_size < 0:
            raise ConfigurationError("KEYPOOL_SIZE must be 0 (no pool) or more")
        self.waiting.limit = cfg.get_int("MAX_WAITING", DEFAULT_MAX_WAITING)
        if self.waiting.limit < 0:
            raise ConfigurationError("MAX_WAITING must be 0 (no limit) or more")

    def _load_templates(self) -> None:
        cfg = self.config
        self.username_template = parse_template("USERNAME_PATTERN",
                                                cfg.get_str("USERNAME_PATTERN", DEFAULT_USERNAME_PATTERN))
        self.subject_template = parse_template("SUBJECTDN_PATTERN",
                                               cfg.get_str("SUBJECTDN_PATTERN", DEFAULT_SUBJECTDN_PATTERN))
        san = cfg.get_str("SUBJECTALTNAME_PATTERN")
        self.san_template: Template | None = parse_template("SUBJECTALTNAME_PATTERN", san) if san else None
        # Structure checks with sample values: a DN that can never parse is a load-time error.
        sample = self.subject_template.fill(lambda v: "sample", escape_dn_value)
        try:
            parse_dn(sample)
        except BadRequestError as exc:
            raise ConfigurationError(f"SUBJECTDN_PATTERN: {exc.message}") from None
        if self.san_template is not None:
            parse_san(self.san_template.fill(lambda v: "sample", escape_san_value))
        self.start_time: TimeSpec | None = parse_time("CERTIFICATESTARTTIME", cfg.get_str("CERTIFICATESTARTTIME"))
        self.end_time: TimeSpec | None = parse_time("CERTIFICATEENDTIME", cfg.get_str("CERTIFICATEENDTIME"))

    def _load_connector(self) -> None:
        name = self.config.get_str("CACONNECTOR_IMPLEMENTATION")
        if not name:
            raise ConfigurationError("CACONNECTOR_IMPLEMENTATION is not set; use SelfSignedCAConnector (tests), "
                                     "LocalCAConnector or PeersRAConnector")
        cls = self.services.registry.ca_connectors.get(name, "CACONNECTOR_IMPLEMENTATION")
        connector: CAConnector = cls(self)
        problems = connector.check_configuration()
        self.fatal_errors.extend(problems)
        self.connector = connector

    def _load_source(self) -> None:
        if self.token is None or isinstance(self.token, OneTimeCryptoToken) or not self.prefix:
            return
        self.source = make_source(self.token, self.config.get_str("KEYSTORAGE"), self.spec, self.keyalg, self.keyspec,
                                  self.prefix, self.services.settings.node_id, self._process_alive)
        if isinstance(self.source, TokenObjectKeys):
            self.source.sweep_once()  # now if the token is active, else once it is (refresh, first key)
        # The pool starts with the first signing request, so command-line processes that load
        # the workers never fill one; a reload with the same settings keeps the existing pool.
        self.pool = existing_pool(self, self.source, self.pool_size)

    def refresh(self) -> None:
        """The token became active (the runtime calls this after an activation): sweep the
        one-time keys that processes which died left in it."""
        if isinstance(self.source, TokenObjectKeys):
            self.source.sweep_once()

    def _process_alive(self, node: str, pid: int) -> bool:
        """Whether a server process of another node is alive, by the node registry."""
        return any(node_tag(p.node) == node and p.pid == pid for p in self.services.store.nodes.live())

    def ensure_pool(self) -> KeyPool | None:
        if self.pool is None and self.pool_size > 0 and self.source is not None:
            self.pool = pool_for(self, self.source, self.pool_size)
        return self.pool

    # -- per request --------------------------------------------------------------------------
    def certificate_request(self, key: OneTimeKey, info: RequestInfo) -> CertificateRequest:
        """Fill the templates and make the CSR for ``key`` (blocking for HSM keys: a few 0.1 ms)."""
        values = template_values(_username(info), info.request_id, info.metadata, info.claims)
        subject = self.subject_template.fill(values, escape_dn_value)
        san = self.san_template.fill(values, escape_san_value) if self.san_template else ""
        now = dt.datetime.now(dt.UTC)
        csr = build_csr(key.private_key, subject, self.csr_algorithm)
        public = key.private_key.public_key()
        return CertificateRequest(
            transaction_id=info.request_id, worker_name=self.name,
            csr_der=csr.public_bytes(serialization.Encoding.DER), public_key_der=public_key_der(public),
            username=self.username_template.fill(values), subject_dn=subject, subject_alt_name=san,
            ca_name=self.config.get_str("CANAME"), end_entity_profile=self.config.get_str("ENDENTITYPROFILE"),
            certificate_profile=self.config.get_str("CERTIFICATEPROFILE"), signature_algorithm=self.csr_algorithm,
            not_before=self.start_time.resolve(now) if self.start_time else None,
            not_after=self.end_time.resolve(now) if self.end_time else None,
            deadline=time.time() + self.wait_timeout,
            private_key=key.private_key if self.connector is not None and self.connector.needs_private_key else None,
            token_claims=values.claims_used,
        )
