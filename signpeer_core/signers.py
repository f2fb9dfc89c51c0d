"""The built-in workers: ``PlainSigner``, ``CMSSigner`` and ``CryptoWorker``.

:class:`BaseSigner` holds what every signer shares: the key alias (``DEFAULTKEY``), the signer
certificate and chain (``SIGNERCERT``/``SIGNERCERTCHAIN`` in the configuration, else the chain
stored in the token), the signature algorithm, and the OFFLINE reasons SignServer reports.
Keys come from :meth:`CryptoToken.acquire` so one-time key tokens plug in unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING, ClassVar

from cryptography import x509

from signpeer_core import tracing
from signpeer_core.certificates import configured_chain
from signpeer_core.certificates import encode_certificate_property as encode_certificate_property  # testing.py
from signpeer_core.cms import add_signature_time_stamp, sign_cms, signature_value
from signpeer_core.config import CRYPTO_WORKER
from signpeer_core.errors import (
    BadRequestError,
    ConfigurationError,
    KeyNotFoundError,
    SignpeerError,
    TimeStampError,
    WorkerOfflineError,
)
from signpeer_core.keys import (
    SignatureAlgorithm,
    check_algorithm_fits,
    default_signature_algorithm,
    is_placeholder,
    public_key_der,
    sign,
    signature_algorithm,
)
from signpeer_core.requestoptions import DATA_OID, DIGESTS, CmsSettings, refuse_options, request_options
from signpeer_core.tokens import CryptoToken, KeyHandle, PreparedSigner, PropertyDoc, RequestInfo
from signpeer_core.workermetrics import FOLD_AT
from signpeer_core.workers import SignRequest, SignResponse, Worker

if TYPE_CHECKING:
    from signpeer_core.config import WorkerConfig
    from signpeer_core.runtime import Runtime
    from signpeer_core.services import Services
    from signpeer_core.timestamping import TimeStamper

log = logging.getLogger("signpeer.workers")
#: ``object.__new__``: the prepared path fills a :class:`SignResponse` without calling its ``__init__``.
_new_response = object.__new__
#: ``time.time``, bound once: the prepared path reads it per request (the signer certificate's validity).
_wall_time = time.time


class BaseSigner(Worker):
    """Shared behaviour of signers (workers of TYPE PROCESSABLE with a key)."""

    properties: ClassVar[tuple[PropertyDoc, ...]] = (
        PropertyDoc("DEFAULTKEY", "—", "alias of the key that signs"),
        PropertyDoc("NEXTCERTSIGNKEY", "—", "alias of the next key while a renewal is pending"),
        PropertyDoc("SIGNERCERT", "—", "signer certificate (base64 DER or PEM); else the token's chain"),
        PropertyDoc("SIGNERCERTCHAIN", "—", "chain, leaf first (base64 DER joined by ';', or PEM)"),
        PropertyDoc("SIGNATUREALGORITHM", "from the key", "e.g. SHA256withECDSA, SHA256withRSA, SHA256withRSAandMGF1, Ed25519"),
        PropertyDoc("CRYPTOTOKEN", "—", "name of the crypto worker whose token holds the key"),
        PropertyDoc("AUTHTYPE", "CLIENTCERT", "CLIENTCERT (refuses everyone until a client is authorized), NOAUTH, "
                    "USERNAME or a plugin's type (JWT)"),
        PropertyDoc("DISABLED", "false", "true makes the worker OFFLINE"),
    )

    def __init__(self, config: WorkerConfig, services: Services) -> None:
        super().__init__(config, services)
        self.alias = config.get_str("DEFAULTKEY")
        self.chain: list[x509.Certificate] = []
        self.algorithm: SignatureAlgorithm | None = None
        self._configured_chain: list[x509.Certificate] = []
        self._chain_problem = ""
        self._valid_from = self._valid_until = 0.0
        self._default_acquire = False
        # What the last look-up of the key in the token found (refresh): whether it ran with an
        # active token, and why the key cannot sign. Status reads use these, never the token.
        self._resolved = False
        self._key_problem = ""
        self._resolving = False
        self._next_refresh = 0.0
        #: Observes the time in the token per request (workermetrics.py); None when metrics are off.
        self._token_timer = services.metrics.token_timer(self.type_name) if services.metrics is not None else None
        #: Its list of samples, bound once: the prepared path appends to it per signature.
        self._token_samples = self._token_timer.samples if self._token_timer is not None else None
        #: Its ``observe``, bound once (the direct signing path, directsigning.py, calls it per signature).
        self.observe_token = self._token_timer.observe if self._token_timer is not None else None
        #: This process's tracer (tracing.py) when tracing is on; None: the signature runs unwrapped.
        self._tracer = tracing.tracer
        #: The token's prepared signing function for this key and algorithm (see :meth:`_prepare`).
        self._prepared: PreparedSigner | None = None
        #: A subclass's own readiness check (the pipeline calls it): decided once, the class does not change.
        self._own_check_ready = type(self).check_ready is not Worker.check_ready

    def load(self, runtime: Runtime) -> None:
        super().load(runtime)
        # Tokens that keep their keys sign without the per-request acquire/release round.
        self._default_acquire = (self.token is not None and type(self.token).acquire is CryptoToken.acquire
                                 and type(self.token).release is CryptoToken.release)
        self._configured_chain = configured_chain(self.config)
        name = self.config.get_str("SIGNATUREALGORITHM")
        if name:
            self.algorithm = signature_algorithm(name)
        if self.token is None:
            self.fatal_errors.append(
                "no crypto token: set CRYPTOTOKEN to a crypto worker, or CRYPTOTOKEN_IMPLEMENTATION_CLASS")
        elif not self.alias and not self.token.provides_certificates:
            self.fatal_errors.append("DEFAULTKEY is not set; generate a key with signpeer generatekey and set DEFAULTKEY")
        self.refresh()

    def refresh(self) -> None:
        """Resolve key, chain and algorithm against the token; called at load, after activation,
        and by a status read that finds the signer not ready (in a thread for blocking tokens)."""
        if self.token is None or self.token.provides_certificates or not self.token.is_active:
            return
        self._prepared = None
        try:
            public = self.token.public_key(self.alias)
        except KeyNotFoundError:
            self._key_problem = (f"key '{self.alias}' (DEFAULTKEY) is not in the crypto token; generate it with "
                                 f"signpeer generatekey {self.name} -alias {self.alias}")
            self._resolved = True
            return
        except SignpeerError as exc:
            # Passing (a busy HSM, say): reported now, looked up again by the next status read.
            self._key_problem = exc.message
            self._resolved = False
            return
        chain = self._configured_chain or self.token.certificate_chain(self.alias)
        if chain and is_placeholder(chain[0]) and not self._configured_chain:
            chain = []
        # A certificate for another key (DEFAULTKEY changed, certificate not yet uploaded) must
        # never sign: its signatures could not be verified. Checked here, once per load.
        problem = ""
        if chain and public_key_der(chain[0]) != public_key_der(public):
            problem = (f"the signer certificate does not match key '{self.alias}'; upload the certificate "
                       f"of that key (signpeer uploadsignercertificate {self.name} GLOB <file>)")
            chain = []
        # Requests run on the event loop while this may run in another thread: publish the new
        # state only once it is complete, validity (timestamps, cheap to compare) before chain.
        if chain:
            self._valid_from = chain[0].not_valid_before_utc.timestamp()
            self._valid_until = chain[0].not_valid_after_utc.timestamp()
        self._chain_problem = problem
        self._key_problem = ""
        self.chain = chain
        self._resolved = True
        if self.algorithm is None:
            self.algorithm = signature_algorithm(default_signature_algorithm(public))
        else:
            try:
                check_algorithm_fits(self.algorithm, public)
            except ConfigurationError as exc:
                self.fatal_errors.append(exc.message)
        self._prepared = self._prepare()

    def _prepare(self) -> PreparedSigner | None:
        """The token's prepared function for this signer's key and algorithm, when every
        per-request step of :meth:`process` other than the signature is known to be a no-op:
        ``PlainSigner``'s own :meth:`sign_data` (the bare signature of the request data) and
        request check, a signer certificate, no load errors, no tracing (spans need the general
        path). Asked at each look-up of
        the key (load, activation, a status read's refresh); the function itself re-checks
        the token's state on every call."""
        token = self.token
        cls = type(self)
        if (token is None or not self.chain or self.fatal_errors or self.algorithm is None
                or self._tracer is not None or cls.sign_data is not PlainSigner.sign_data
                or cls.check_request is not BaseSigner.check_request or cls.process is not BaseSigner.process):
            return None
        return token.prepared_signer(self.alias, self.algorithm)

    def ready_prepared(self) -> PreparedSigner | None:
        """The prepared signer (:meth:`_prepare`) when :meth:`check_ready` would pass and
        :meth:`process` would take it for a request without options now (the signer certificate
        valid); else None. Memory only."""
        prepared = self._prepared
        if prepared is None or self.fatal_errors or self._disabled or self._own_check_ready:
            return None
        token = self.token
        if token is None or not token.is_active or not self._valid_from <= _wall_time() <= self._valid_until:
            return None
        return prepared

    def _refresh_in_background(self) -> None:
        """A status read must not wait for a device: a blocking token is asked in a thread (one
        at a time, at most once a second), and the next status read sees the outcome."""
        now = time.monotonic()
        if self._resolving or now < self._next_refresh:
            return
        self._resolving = True
        self._next_refresh = now + 1.0

        def run() -> None:
            try:
                self.refresh()
            except Exception:  # a plugin bug: the worker stays "not resolved", the log says why
                log.exception("worker %s: looking up key '%s' failed", self.name, self.alias)
            finally:
                self._resolving = False

        threading.Thread(target=run, daemon=True, name=f"signpeer-refresh-{self.id}").start()

    def offline_reasons(self) -> list[str]:
        reasons = super().offline_reasons()
        token = self.token
        if token is None or not token.is_active or token.provides_certificates or not self.alias:
            return reasons
        if not token.blocking:
            # Tokens that do not block answer key look-ups from memory (the hot-path rule for
            # private_key): ask them on every read, as a key may come or go without a reload.
            try:
                token.public_key(self.alias)
            except KeyNotFoundError:
                self._resolved = False  # looked up again once the key is there
                return reasons + [(f"key '{self.alias}' (DEFAULTKEY) is not in the crypto token; generate it "
                                   f"with signpeer generatekey {self.name} -alias {self.alias}")]
            except SignpeerError as exc:
                return reasons + [exc.message]
            if not (self._resolved and not self._key_problem and self.chain):
                self.refresh()
        elif not (self._resolved and not self._key_problem and self.chain):
            # A blocking token (an HSM) is never asked from a status read: the last look-up's
            # outcome is reported, and a new look-up runs in a thread for the next read.
            self._refresh_in_background()
        if not self._resolved:
            return reasons + [self._key_problem or (f"key '{self.alias}' (DEFAULTKEY) is being looked up in the "
                                                    "crypto token; ask again in a moment")]
        if self._key_problem:
            return reasons + [self._key_problem]
        if not self.chain:
            return reasons + [self._chain_problem or (f"no signer certificate: install one with signpeer "
                                                      f"uploadsignercertificate {self.name} GLOB <file> (a CSR "
                                                      "comes from signpeer generatecertreq)")]
        now = time.time()
        if now < self._valid_from:
            return reasons + [("signer certificate not yet valid (valid from "
                               f"{self.chain[0].not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)")]
        if now > self._valid_until:
            return reasons + [f"signer certificate expired on {self.chain[0].not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"]
        return reasons

    def check_request(self, request: SignRequest) -> None:
        """Refuse (400) a request this signer cannot honour, before any key is touched. By
        default: any request option (:mod:`signpeer_core.requestoptions`), which would be ignored."""
        if request.metadata:
            refuse_options(self.name, request_options(request.metadata))

    async def process(self, request: SignRequest) -> SignResponse:
        """Acquire the key, sign, release. The pipeline has called :meth:`check_ready`.

        The hot path first: with a prepared signer (:meth:`_prepare`), a request without
        options, and the signer certificate valid now, the token signs inline in one call; when
        that function declines (None), the general path below does everything as before."""
        prepared = self._prepared
        if prepared is not None and not request.metadata and self._valid_from <= _wall_time() <= self._valid_until:
            signed = prepared(request.data)
            if signed is not None:
                signature, seconds = signed
                samples = self._token_samples
                if samples is not None:  # _TokenTimer.observe(seconds), without the call
                    samples.append(seconds)
                    count = len(samples)
                    if count == 1 or count >= FOLD_AT:
                        self._token_timer.appended(count)  # type: ignore[union-attr]
                # SignResponse(signature, id, id, certificate) without the call of its __init__
                # (a third of the response's cost; it has no __post_init__): the same fields.
                response = _new_response(SignResponse)
                response.data = signature
                response.request_id = response.archive_id = request.request_id
                response.signer_certificate = self.chain[0]
                response.metadata = {}
                return response
        self.check_request(request)
        token = self.token
        if token is None:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(self.offline_reasons()))
        if not self.chain and not token.provides_certificates:
            self.check_ready()  # the pipeline's refusals, for callers that come without it (tests)
            self.refresh()  # signing may ask the token; a status read may not
            reasons = self.offline_reasons()
            if reasons:
                raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(reasons))
        if self._default_acquire:
            return await self._process_with_own_key(request, token)
        info = RequestInfo(request.request_id, self.name, request.username, request.client_certificate,
                           request.metadata, request.claims)
        try:
            with tracing.span("signpeer.token.acquire", {"signpeer.token.type": token.type_name}):
                handle = await token.acquire(self.alias, self.chain, info)
        except KeyNotFoundError as exc:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: {exc.message}") from exc
        try:
            if not handle.chain:
                raise WorkerOfflineError(f"worker '{self.name}' is offline: no signer certificate")
            cert = handle.chain[0]
            if self.chain and cert is self.chain[0]:  # the configured certificate: its validity is known
                valid = self._valid_from <= time.time() <= self._valid_until
            else:  # a token's own (one-time keys): cryptography makes a datetime per attribute read
                now = dt.datetime.now(dt.UTC)
                valid = cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
            if not valid:
                raise WorkerOfflineError(f"worker '{self.name}' is offline: the signer certificate is not valid now")
            algorithm = self.algorithm or signature_algorithm(default_signature_algorithm(handle.private_key))
            in_token = time.perf_counter()
            if self._tracer is not None:
                result = await self._sign_traced(request, handle, algorithm, token)
            elif token.blocking:
                # HSM round trips must not stall the event loop; the token serializes its calls.
                result = await token.run_blocking(self.sign_data, request, handle, algorithm)
            else:
                result = self.sign_data(request, handle, algorithm)
            if self._token_timer is not None:
                self._token_timer.observe(time.perf_counter() - in_token)
        finally:
            with tracing.span("signpeer.token.release"):
                await token.release(handle)
        return SignResponse(data=result, request_id=request.request_id, archive_id=request.request_id,
                            signer_certificate=handle.chain[0])

    async def _process_with_own_key(self, request: SignRequest, token: CryptoToken) -> SignResponse:
        """The hot path for tokens that keep their keys (no per-request acquire/release)."""
        try:
            handle = KeyHandle(self.alias, token.private_key(self.alias), self.chain)
        except KeyNotFoundError as exc:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: {exc.message}") from exc
        if not self._valid_from <= time.time() <= self._valid_until:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: the signer certificate is not valid now")
        algorithm = self.algorithm or signature_algorithm(default_signature_algorithm(handle.private_key))
        in_token = time.perf_counter()
        if self._tracer is not None:
            result = await self._sign_traced(request, handle, algorithm, token)
        elif token.blocking:
            # HSM round trips must not stall the event loop; the token serializes its calls.
            result = await token.run_blocking(self.sign_data, request, handle, algorithm)
        else:
            result = self.sign_data(request, handle, algorithm)
        if self._token_timer is not None:
            self._token_timer.observe(time.perf_counter() - in_token)
        return SignResponse(data=result, request_id=request.request_id, archive_id=request.request_id,
                            signer_certificate=self.chain[0])

    async def _sign_traced(self, request: SignRequest, handle: KeyHandle, algorithm: SignatureAlgorithm,
                           token: CryptoToken) -> bytes:
        """The signature in the token under a ``signpeer.token.sign`` span (tracing on)."""
        with tracing.span("signpeer.token.sign", {"signpeer.token.type": token.type_name,
                                                  "signpeer.signature_algorithm": algorithm.name,
                                                  "signpeer.key.alias": handle.alias}):
            if token.blocking:
                return await token.run_blocking(self.sign_data, request, handle, algorithm)
            return self.sign_data(request, handle, algorithm)

    def sign_data(self, request: SignRequest, handle: KeyHandle, algorithm: SignatureAlgorithm) -> bytes:
        raise NotImplementedError


class PlainSigner(BaseSigner):
    """The raw signature over the request bytes (SignServer's PlainSigner)."""

    type_name = "PlainSigner"
    implementation_aliases = ("org.signserver.module.cmssigner.PlainSigner",)

    def sign_data(self, request: SignRequest, handle: KeyHandle, algorithm: SignatureAlgorithm) -> bytes:
        return sign(handle.private_key, algorithm, request.data)


class CMSSigner(BaseSigner):
    """CMS SignedData, attached or detached (``DETACHEDSIGNATURE``), with the chain."""

    type_name = "CMSSigner"
    implementation_aliases = ("org.signserver.module.cmssigner.CMSSigner",)
    timestamper: TimeStamper | None = None
    properties = BaseSigner.properties + (
        PropertyDoc("DETACHEDSIGNATURE", "false", "true leaves the content out of the SignedData"),
        PropertyDoc("TSA_WORKER", "—", "name of a TimeStampSigner of this server that time-stamps each signature "
                    "(called in process)"),
        PropertyDoc("TSA_URL", "—", "URL of an RFC 3161 time-stamp authority that time-stamps each signature"),
        PropertyDoc("TSA_USERNAME", "—", "HTTP Basic user name for TSA_URL"),
        PropertyDoc("TSA_PASSWORD", "—", "HTTP Basic password for TSA_URL"),
        PropertyDoc("TSA_CAFILE", "system CAs", "PEM file of the CAs trusted for an https TSA_URL"),
        PropertyDoc("TSA_DIGESTALGORITHM", "SHA256", "hash of the signature value sent to the TSA"),
        PropertyDoc("TSA_POLICYOID", "—", "TSA policy to request"),
        PropertyDoc("TSA_TIMEOUT", "10", "seconds to wait for the time-stamp"),
        PropertyDoc("TSA_REQUIRED", "true", "false: a signature whose time-stamp failed is returned unstamped "
                    "(logged) instead of failing the request"),
        PropertyDoc("ALLOW_DETACHEDSIGNATURE_OVERRIDE", "false", "true lets the request option DETACHEDSIGNATURE "
                    "choose"),
        PropertyDoc("CLIENTSIDEHASHING", "false", "true: the request data is the client's hash of the content "
                    "(a detached signature; needs ACCEPTED_HASH_DIGEST_ALGORITHMS)"),
        PropertyDoc("ALLOW_CLIENTSIDEHASHING_OVERRIDE", "false", "true lets the request option "
                    "USING_CLIENTSUPPLIED_HASH choose"),
        PropertyDoc("ACCEPTED_HASH_DIGEST_ALGORITHMS", "—", "digests a client may hash with, e.g. SHA-256,SHA-384,SHA-512"),
        PropertyDoc("CONTENTOID", DATA_OID, "content type (OID) of the SignedData"),
        PropertyDoc("ALLOW_CONTENTOID_OVERRIDE", "false", "true lets the request option CONTENTOID choose"),
    )

    def load(self, runtime: Runtime) -> None:
        from signpeer_core.timestamping import timestamper_for

        super().load(runtime)
        try:
            self.cms_settings = CmsSettings(self.config)
        except ConfigurationError as exc:
            self.fatal_errors.append(exc.message)
            self.cms_settings = None
        self.detached = self.cms_settings.detached if self.cms_settings is not None else False
        if self.algorithm is not None and self.algorithm.prehashed:
            self.fatal_errors.append(f"{self.algorithm.name} cannot be used by CMSSigner; use e.g. SHA256withRSA")
        self.timestamper = None
        try:
            self.timestamper = timestamper_for(self.config, self.services)
        except ConfigurationError as exc:
            self.fatal_errors.append(exc.message)

    async def process(self, request: SignRequest) -> SignResponse:
        """Sign; then, with ``TSA_WORKER``/``TSA_URL``, add the signature time-stamp."""
        response = await super().process(request)
        stamper = self.timestamper
        if stamper is not None:
            try:
                with tracing.span("signpeer.timestamp", {"signpeer.tsa": type(stamper).__name__}):
                    token = await stamper.stamp(signature_value(response.data), request.request_id)
            except TimeStampError as exc:
                if stamper.options.required:
                    raise
                log.warning("worker %s: request %s signed without a time-stamp (TSA_REQUIRED=false): %s",
                            self.name, request.request_id, exc.message)
            else:
                response.data = add_signature_time_stamp(response.data, token)
        return response

    def check_request(self, request: SignRequest) -> None:
        if self.cms_settings is None:
            self.check_ready()  # OFFLINE with the configuration error as the reason
            return
        options = self.cms_settings.resolve(self.name, request.metadata)
        if options.client_digest is not None:
            size = DIGESTS[options.client_digest][1]
            if len(request.data) != size:
                raise BadRequestError(f"the request data must be the {options.client_digest} hash of the content "
                                      f"({size} bytes), not {len(request.data)} bytes")
        elif not request.data and not options.detached:
            raise BadRequestError("nothing to sign: the request data is empty")

    cms_settings: CmsSettings | None

    def sign_data(self, request: SignRequest, handle: KeyHandle, algorithm: SignatureAlgorithm) -> bytes:
        if self.cms_settings is None:
            raise WorkerOfflineError(f"worker '{self.name}' is offline: " + "; ".join(self.offline_reasons()))
        options = self.cms_settings.resolve(self.name, request.metadata)
        if options.client_digest is not None:
            algorithm = _with_digest(algorithm, options.client_digest)
        return sign_cms(request.data, handle.private_key, algorithm, handle.chain[0], handle.chain,
                        detached=options.detached, content_type=options.content_oid,
                        precomputed_digest=options.client_digest is not None)


def _with_digest(algorithm: SignatureAlgorithm, digest: str) -> SignatureAlgorithm:
    """The signature algorithm of ``algorithm``'s key kind with the client's digest, so that the
    SignerInfo's digest algorithm, the messageDigest and the signature agree (openssl checks
    the signature with the SignerInfo's digest)."""
    if algorithm.kind == "Ed25519":
        if digest != "SHA512":
            raise BadRequestError("an Ed25519 CMS signature needs a SHA-512 client-supplied hash (RFC 8419)")
        return algorithm
    suffix = "ECDSA" if algorithm.kind == "EC" else ("RSAandMGF1" if algorithm.pss else "RSA")
    return signature_algorithm(f"{digest}with{suffix}")


class CryptoWorker(Worker):
    """A worker that only holds a crypto token for other workers (``TYPE=CRYPTO_WORKER``)."""

    type_name = "CryptoWorker"
    implementation_aliases = ("org.signserver.server.signers.CryptoWorker",)
    default_worker_type = CRYPTO_WORKER

    def load(self, runtime: Runtime) -> None:
        super().load(runtime)
        if self.token is None:
            self.fatal_errors.append("no crypto token: set CRYPTOTOKEN_IMPLEMENTATION_CLASS")
