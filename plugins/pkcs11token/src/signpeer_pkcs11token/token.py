"""``Pkcs11CryptoToken``: keys in a PKCS#11 HSM, configured as SignServer's PKCS11CryptoToken.

One instance per crypto worker and process. It keeps one read/write session (opened at
activation, reused for every operation) and, with ``CACHE_PRIVATEKEY`` (the default), the
object handles and public keys of the keys it has used, by alias.

Every call into the module holds the module's process-wide lock (:mod:`.module` explains
why: python-pkcs11 + SoftHSM2 crash when two threads are inside the module at once). Scale
HSM throughput with server processes, each of which initializes the module itself.

Keys are token objects with ``CKA_LABEL`` = ``CKA_ID`` = the alias (UTF-8). Certificates
stored with ``importcertificatechain`` are ``CKO_CERTIFICATE`` objects with the same label;
the leaf also carries the alias as ``CKA_ID``. New keys get no placeholder certificate in the
token (unlike SignServer, whose Java key store needs one): the public key object is enough to
find and describe a key, and a token object costs ~20 ms to write in SoftHSM2.
:meth:`~Pkcs11CryptoToken.generate_session_key` / :meth:`~Pkcs11CryptoToken.destroy_session_key`
make and delete short-lived keys (session objects by default) for one-time keys.

Failures never escape as anything but :class:`SignpeerError`: a missing module, an unknown
slot or label, a wrong PIN leave the token inactive with :meth:`offline_reasons` saying what
to fix. A lost session or login is reopened and the operation retried once; if the token is
gone, the token reports itself offline and tries to reconnect every few seconds. Status reads
(:attr:`is_active`, :meth:`offline_reasons`) answer from what the token knows and never call
into the module: a due reconnection or session probe runs in a thread.

Why this module is longer than ~500 lines: it is one class whose every method follows one
locking and recovery discipline around a library that is not thread-safe (take the module
lock, use the one session, on a lost session reopen and retry once, keep the handle caches
consistent). The parts that stand alone already live beside it (``module.py``: loading and the
lock; ``keys.py``: key objects that sign in the token; ``attributes.py``: key templates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import pkcs11
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pkcs11 import Attribute, CertificateType, KeyType, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from signpeer_core.api import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CryptoToken,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    KeyHandle,
    KeyNotFoundError,
    KeySpec,
    PreparedSigner,
    PrivateKey,
    PropertyDoc,
    PublicKey,
    RequestInfo,
    SignatureAlgorithm,
    SignpeerError,
    WorkerConfig,
    order_chain,
    parse_key_spec,
    public_key_der,
)
from signpeer_pkcs11token import metrics as token_metrics
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.attributes import parse_attributes
from signpeer_pkcs11token.keys import TokenKey, wrap_key
from signpeer_pkcs11token.pinthrottle import THROTTLE
from signpeer_pkcs11token.prepared import prepare_signer

if TYPE_CHECKING:
    from signpeer_core.api import Services

log = logging.getLogger("signpeer.pkcs11token")
T = TypeVar("T")

SLOT_LABEL_TYPES = ("TOKEN_LABEL", "SLOT_NUMBER", "SLOT_INDEX")

#: The session or the login is gone (or the device went away): reopen, log in, retry once.
RECONNECT_ERRORS: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.UserNotLoggedIn, p11e.DeviceRemoved,
    p11e.TokenNotPresent, p11e.TokenNotRecognised, p11e.DeviceError, p11e.SlotIDInvalid,
)
#: A cached object handle went stale (key removed or re-created by another process).
HANDLE_ERRORS: tuple[type[Exception], ...] = (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
#: A device-side failure that a second try may not see (SoftHSM2's file store while another
#: process rewrites the token); one retry, then a 503 that says the token failed.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (p11e.GeneralError, p11e.FunctionFailed)

#: Seconds between reconnection attempts after the token went away.
RECONNECT_INTERVAL = 3.0
#: Signatures faster than this (moving average) run inline when the module is idle; slower
#: ones (RSA in SoftHSM2 takes ~0.8 ms, network HSMs more) always go to a worker thread so
#: they never hold up the event loop.
INLINE_LIMIT = 0.00025

# RFC 8410 id-Ed25519 as CKA_EC_PARAMS (PKCS#11 3.0 accepts it, SoftHSM2 2.6 does).
_ED25519_PARAMS = core.ObjectIdentifier("1.3.101.112").dump()


@dataclass(frozen=True)
class KeyPairTemplate:
    """What ``C_GenerateKeyPair`` gets for one key pair (:meth:`Pkcs11CryptoToken._keypair_template`)."""

    key_type: KeyType
    length: int | None
    public: dict[Attribute, Any]
    private: dict[Attribute, Any]
    token_object: bool


class Pkcs11CryptoToken(CryptoToken):
    """Keys in a PKCS#11 token; signing forwards to the device."""

    type_name = "Pkcs11CryptoToken"
    implementation_aliases = ("org.signserver.server.cryptotokens.PKCS11CryptoToken", "PKCS11CryptoToken")
    blocking = True
    properties = (
        PropertyDoc("SHAREDLIBRARY", "— (required)", "path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so"),
        PropertyDoc("SHAREDLIBRARYNAME", "—", "SignServer's library name: not resolved by signpeer; without SHAREDLIBRARY "
                    "the error names it"),
        PropertyDoc("SLOTLABELTYPE", "TOKEN_LABEL", "how SLOTLABELVALUE names the token: TOKEN_LABEL, SLOT_NUMBER or SLOT_INDEX"),
        PropertyDoc("SLOTLABELVALUE", "— (required)", "the token label, slot id, or index in the module's slot list"),
        PropertyDoc("PIN", "—", "user PIN for auto-activation; without it run signpeer activatecryptotoken", secret=True),
        PropertyDoc("CACHE_PRIVATEKEY", "true", "keep key handles and public keys by alias instead of searching per use"),
        PropertyDoc("ATTRIBUTES", "—", "SunPKCS11-style key generation attributes (attributes(generate, CKO_PRIVATE_KEY, *) = {...})"),
        PropertyDoc("KEYGENERATIONATTRIBUTES", "—", "simple key generation attributes: PRIVATE.CKA_X=value; PUBLIC.CKA_Y=value"),
        PropertyDoc("SLOT", "—", "legacy SignServer property: same as SLOTLABELTYPE=SLOT_NUMBER with this value"),
        PropertyDoc("SLOTLISTINDEX", "—", "legacy SignServer property: same as SLOTLABELTYPE=SLOT_INDEX with this value"),
    )

    def __init__(self, worker_id: int, config: WorkerConfig, services: Services) -> None:
        super().__init__(worker_id, config, services)
        self.library = config.get_str("SHAREDLIBRARY")
        if not self.library:
            named = config.get_str("SHAREDLIBRARYNAME")
            if named:
                raise ConfigurationError(
                    f"SHAREDLIBRARY is not set, and SHAREDLIBRARYNAME '{named}' names a library by SignServer's "
                    "deploy-time table, which signpeer does not have: set SHAREDLIBRARY to the path of the module "
                    "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so) and remove SHAREDLIBRARYNAME")
            raise ConfigurationError(
                "SHAREDLIBRARY is not set: give the path of the HSM's PKCS#11 module "
                "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
        self.slot_type, self.slot_value = self._slot_selection(config)
        self.cache_keys = config.get_bool("CACHE_PRIVATEKEY", True)
        self.keygen_attributes = parse_attributes(config.get_str("ATTRIBUTES"), config.get_str("KEYGENERATIONATTRIBUTES"))
        self._module: p11mod.Pkcs11Module | None = None
        self._session: Any = None  # pkcs11 Session, open and logged in while active
        self._slot_id: int | None = None
        self._pin: str | None = None  # the verified PIN, kept to log in again after a lost session
        self._problem: str | None = None  # why activation failed
        self._lost: str | None = None  # why the token became unusable after activation
        self._next_reconnect = 0.0
        self._retry_pin: str | None = None  # configured PIN to retry after a passing failure
        self._retrying = False
        self._checking = False  # a reconnection or session probe runs in a thread
        self._next_probe = 0.0
        self._objects: dict[str, Any] = {}  # alias -> pkcs11 private key object (CACHE_PRIVATEKEY)
        self._wrappers: dict[str, PrivateKey] = {}  # alias -> wrapper key (CACHE_PRIVATEKEY)
        self._session_keys: dict[str, tuple[Any, Any]] = {}  # alias -> (public, private) of generate_session_key

    # -- configuration ---------------------------------------------------------------------
    @staticmethod
    def _slot_selection(config: WorkerConfig) -> tuple[str, str]:
        value = config.get_str("SLOTLABELVALUE")
        kind = config.get_str("SLOTLABELTYPE").upper()
        if not value and config.get_str("SLOT"):
            kind, value = kind or "SLOT_NUMBER", config.get_str("SLOT")
        if not value and config.get_str("SLOTLISTINDEX"):
            kind, value = kind or "SLOT_INDEX", config.get_str("SLOTLISTINDEX")
        kind = kind or "TOKEN_LABEL"
        if kind not in SLOT_LABEL_TYPES:
            raise ConfigurationError(f"SLOTLABELTYPE must be one of {', '.join(SLOT_LABEL_TYPES)}, not '{kind}'")
        if not value:
            raise ConfigurationError(
                "SLOTLABELVALUE is not set: give the token label (SLOTLABELTYPE=TOKEN_LABEL), "
                "the slot id (SLOT_NUMBER) or the index in the slot list (SLOT_INDEX)")
        if kind != "TOKEN_LABEL" and not value.isdigit():
            raise ConfigurationError(f"SLOTLABELVALUE must be a whole number for {kind}, not '{value}'")
        return kind, value

    @property
    def _where(self) -> str:
        label = {"TOKEN_LABEL": "token labelled", "SLOT_NUMBER": "slot", "SLOT_INDEX": "slot index"}[self.slot_type]
        return f"{label} '{self.slot_value}' of {self.library}"

    @property
    def _activate_hint(self) -> str:
        return f"signpeer activatecryptotoken {self.config.name}"

    # -- life cycle ------------------------------------------------------------------------
    def auto_activate(self) -> None:
        pin = self.config.get("PIN", "")
        if not pin:
            return
        # SoftHSM2's file store answers GeneralError now and then while another process starts on
        # the same token; a wrong PIN or a missing token does not get better by waiting.
        for attempt in range(3):
            try:
                self.activate(pin)
                return
            except (CryptoTokenAuthenticationError, ConfigurationError):
                raise
            except SignpeerError:
                if attempt == 2:
                    # Keep trying in the background of status checks (is_active/offline_reasons),
                    # so a process that started while the token was busy does not stay offline.
                    self._retry_pin = pin
                    self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _retry_auto_activation(self) -> None:
        """A configured PIN whose activation failed for a passing reason: try again in a thread,
        so status checks (on the event loop, on every signing request) never wait for the HSM."""
        pin = self._retry_pin
        if pin is None or self._retrying or time.monotonic() < self._next_reconnect:
            return
        self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL
        self._retrying = True
        threading.Thread(target=self._retry_in_thread, args=(pin,), daemon=True,
                         name=f"pkcs11-activate-{self.worker_id}").start()

    def _retry_in_thread(self, pin: str) -> None:
        try:
            if self._retry_pin is pin:  # not deactivated by an administrator meanwhile
                self.activate(pin)
        except (CryptoTokenAuthenticationError, ConfigurationError) as exc:
            # Never again with this PIN: HSMs lock the user PIN after a few failed logins.
            self._retry_pin = None
            log.error("worker %s: auto-activation refused, not retrying: %s", self.config.name, exc.message)
        except SignpeerError as exc:
            log.warning("worker %s: auto-activation still failing: %s", self.config.name, exc.message)
        finally:
            self._retrying = False

    def activate(self, authentication_code: str) -> None:
        """Log in with ``authentication_code``. A token that is active stays active when the code
        is wrong (it is checked on a second session first); repeated wrong PINs are slowed down
        (:mod:`.pinthrottle`) before the HSM locks the user PIN."""
        module = self._load_module()
        with module.lock:
            THROTTLE.check(self._where)
            if self._pin is not None and self._lost is None and self._session is not None:
                self._check_pin_locked(module, authentication_code)
                return
            self._close_session_locked()
            self._pin = None
            self._lost = None
            try:
                self._open_and_login_locked(module, authentication_code)
            except SignpeerError as exc:
                self._problem = exc.message
                self._count_login_failure(exc)
                raise
            THROTTLE.succeeded(self._where)
            self._pin = authentication_code
            self._problem = None
            self._retry_pin = None
            log.info("worker %s: PKCS#11 token activated (%s)", self.config.name, self._where)

    def _count_login_failure(self, exc: SignpeerError) -> None:
        if isinstance(exc, CryptoTokenAuthenticationError):
            THROTTLE.failed(self._where)

    def _check_pin_locked(self, module: p11mod.Pkcs11Module, pin: str) -> None:
        """Activation of an active token: check ``pin`` on a session of its own; the token's
        session (and so its workers) stays as it is whatever the outcome."""
        try:
            session, _ = self._login_new_session_locked(module, pin)
        except SignpeerError as exc:
            self._count_login_failure(exc)
            log.warning("worker %s: activation refused, the token stays active: %s", self.config.name, exc.message)
            raise
        module.raw.close_session(session.handle)  # the token's own session keeps the login
        THROTTLE.succeeded(self._where)
        self._pin = pin
        self._retry_pin = None
        log.info("worker %s: PKCS#11 token activated again (%s)", self.config.name, self._where)

    def deactivate(self) -> None:
        self._retry_pin = None  # an administrator's deactivation is not undone by a retry
        module = self._module
        if module is None:
            self._pin = None
            return
        with module.lock:
            self._close_session_locked()
            self._pin = None
            self._lost = None
            self._problem = None

    @property
    def is_active(self) -> bool:
        if self._pin is None:
            self._retry_auto_activation()
        if self._pin is None:
            return False
        if self._lost is None:
            return True
        self._check_in_background()
        return False

    def offline_reasons(self) -> list[str]:
        """From what the token knows; a reconnection or a session probe that is due runs in a
        thread (status reads never call into the module), and the next read sees its outcome."""
        if self._pin is None:
            self._retry_auto_activation()
        if self._pin is None:
            return [self._problem or f"crypto token not activated ({self._activate_hint} <PIN>, or set PIN)"]
        self._check_in_background()
        if self._lost is not None:
            return [self._lost]
        return []

    def _check_in_background(self) -> None:
        """Start a reconnection (the token is lost) or a session probe (at most once a second) in
        a thread, unless one runs or none is due."""
        if self._checking or self._module is None or self._pin is None:
            return
        now = time.monotonic()
        if self._lost is not None:
            if now < self._next_reconnect:
                return
        elif self._session is None or now < self._next_probe:
            return
        self._checking = True

        def check() -> None:
            try:
                if self._lost is not None:
                    self._try_reconnect()
                else:
                    self._probe()
            finally:
                self._checking = False

        threading.Thread(target=check, daemon=True, name=f"pkcs11-check-{self.worker_id}").start()

    def close(self) -> None:
        module = self._module
        if module is not None:
            with module.lock:
                self._close_session_locked()

    # -- sessions (callers hold the module lock) -------------------------------------------
    def _load_module(self) -> p11mod.Pkcs11Module:
        if self._module is None:
            try:
                self._module = p11mod.load_module(self.library)
            except p11mod.ModuleLoadError as exc:
                self._problem = f"{exc}: install the HSM's PKCS#11 module or fix SHAREDLIBRARY"
                raise CryptoTokenOfflineError(self._problem) from exc
        return self._module

    def _find_token_locked(self, module: p11mod.Pkcs11Module) -> Any:
        try:
            slots = module.lib.get_slots()
            if self.slot_type == "TOKEN_LABEL":
                found, labels = [], []
                for slot in slots:
                    try:
                        token = slot.get_token()
                    except (p11e.TokenNotPresent, p11e.TokenNotRecognised):
                        continue
                    if token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
                        labels.append(token.label)
                    if token.label == self.slot_value:
                        found.append(token)
                if not found:
                    present = ", ".join(repr(lb) for lb in labels) or "none"
                    raise CryptoTokenOfflineError(
                        f"no token labelled '{self.slot_value}' in {self.library} (initialized tokens: {present}); "
                        f"fix SLOTLABELVALUE or initialize the token")
                if len(found) > 1:
                    raise CryptoTokenOfflineError(
                        f"{len(found)} tokens are labelled '{self.slot_value}' in {self.library}; "
                        f"select one with SLOTLABELTYPE=SLOT_NUMBER")
                return found[0]
            if self.slot_type == "SLOT_NUMBER":
                slot = next((s for s in slots if s.slot_id == int(self.slot_value)), None)
                if slot is None:
                    ids = ", ".join(str(s.slot_id) for s in slots) or "none"
                    raise CryptoTokenOfflineError(
                        f"no slot {self.slot_value} in {self.library} (slots: {ids}); fix SLOTLABELVALUE")
            else:
                index = int(self.slot_value)
                if index >= len(slots):
                    raise CryptoTokenOfflineError(
                        f"no slot index {index} in {self.library}: it has {len(slots)} slots; fix SLOTLABELVALUE")
                slot = slots[index]
            try:
                return slot.get_token()
            except (p11e.TokenNotPresent, p11e.TokenNotRecognised) as exc:
                raise CryptoTokenOfflineError(
                    f"no token in {self._where} ({type(exc).__name__}): insert or connect the token") from exc
        except pkcs11.PKCS11Error as exc:
            raise CryptoTokenOfflineError(f"cannot list the slots of {self.library}: {type(exc).__name__} {exc}") from exc

    def _open_and_login_locked(self, module: p11mod.Pkcs11Module, pin: str) -> None:
        session, slot_id = self._login_new_session_locked(module, pin)
        self._session = session
        self._slot_id = slot_id
        module.open_sessions[slot_id] = module.open_sessions.get(slot_id, 0) + 1
        token_metrics.sessions.labels(self.config.name).inc()

    def _login_new_session_locked(self, module: p11mod.Pkcs11Module, pin: str) -> tuple[Any, int]:
        """A new logged-in session (not yet the token's); closed again when the login fails."""
        token = self._find_token_locked(module)
        if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            raise CryptoTokenOfflineError(f"the token in {self._where} is not initialized; initialize it first")
        try:
            session = token.open(rw=True)
        except pkcs11.PKCS11Error as exc:
            raise CryptoTokenOfflineError(f"cannot open a session with the {self._where}: {type(exc).__name__}") from exc
        slot_id = token.slot.slot_id
        try:
            self._login_locked(module, session.handle, slot_id, pin)
        except SignpeerError:
            module.raw.close_session(session.handle)
            raise
        return session, slot_id

    def _login_locked(self, module: p11mod.Pkcs11Module, handle: int, slot_id: int, pin: str) -> None:
        raw = module.raw
        rv = raw.login(handle, pin)
        if rv == p11mod.CKR_USER_ALREADY_LOGGED_IN:
            # Login state is per token and process: another instance logged in already. Only
            # trust that for the same PIN; otherwise check this PIN and restore the old login.
            known = module.logged_in.get(slot_id)
            if known == pin:
                return
            raw.logout(handle)
            rv = raw.login(handle, pin)
            if rv != p11mod.CKR_OK and known is not None:
                raw.login(handle, known)
        if rv == p11mod.CKR_OK:
            module.logged_in[slot_id] = pin
            return
        name = p11mod.rv_name(rv)
        if rv in (p11mod.CKR_PIN_INCORRECT, p11mod.CKR_PIN_LEN_RANGE):
            raise CryptoTokenAuthenticationError(
                f"wrong PIN for the {self._where} ({name}): fix PIN or run {self._activate_hint} <PIN>")
        if rv == p11mod.CKR_PIN_LOCKED:
            raise CryptoTokenAuthenticationError(f"the user PIN of the {self._where} is locked ({name}): unblock it with the SO PIN")
        if rv == p11mod.CKR_PIN_EXPIRED:
            raise CryptoTokenAuthenticationError(f"the user PIN of the {self._where} has expired ({name}): set a new PIN")
        if rv == p11mod.CKR_USER_PIN_NOT_INITIALIZED:
            raise CryptoTokenAuthenticationError(f"the {self._where} has no user PIN ({name}): initialize it with the SO PIN")
        raise CryptoTokenOfflineError(f"login to the {self._where} failed ({name})")

    def _close_session_locked(self) -> None:
        self._objects.clear()
        self._wrappers.clear()
        self._session_keys.clear()  # session objects die with the session; handles may be reused
        session, self._session = self._session, None
        module = self._module
        if session is None or module is None:
            return
        token_metrics.sessions.labels(self.config.name).dec()
        module.raw.close_session(session.handle)  # errors ignored: it may be gone already
        slot_id = self._slot_id
        if slot_id is not None:
            left = module.open_sessions.get(slot_id, 1) - 1
            module.open_sessions[slot_id] = left
            if left <= 0:
                module.logged_in.pop(slot_id, None)  # the last session ends the login

    def _reconnect_locked(self, why: str) -> None:
        """Drop the session, open a new one and log in with the verified PIN."""
        module = self._module
        assert module is not None and self._pin is not None
        self._close_session_locked()
        try:
            self._open_and_login_locked(module, self._pin)
        except SignpeerError as exc:
            token_metrics.reconnects.labels(self.config.name, "failed").inc()
            self._lost = f"the PKCS#11 token is unavailable ({why}): {exc.message}; signpeer keeps retrying"
            self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL
            raise CryptoTokenOfflineError(self._lost) from exc
        token_metrics.reconnects.labels(self.config.name, "success").inc()
        self._lost = None
        log.info("worker %s: PKCS#11 session reopened after %s", self.config.name, why)

    def _try_reconnect(self) -> bool:
        module = self._module
        if module is None or self._pin is None or time.monotonic() < self._next_reconnect:
            return self._lost is None
        # Never wait for signing calls here: they reconnect themselves.
        if not module.lock.acquire(blocking=False):
            return self._lost is None
        try:
            if self._lost is not None:
                try:
                    self._reconnect_locked(self._lost)
                except SignpeerError:
                    return False
            return True
        finally:
            module.lock.release()

    def _probe(self) -> None:
        """At most once a second, ask the module whether our session still exists."""
        module, session = self._module, self._session
        now = time.monotonic()
        if module is None or session is None or self._lost is not None or now < self._next_probe:
            return
        self._next_probe = now + 1.0
        if not module.lock.acquire(blocking=False):
            return  # busy: the token is evidently in use
        try:
            if self._session is not None and module.raw.session_info(self._session.handle) is None:
                try:
                    self._reconnect_locked("session closed")
                except SignpeerError:
                    pass
        finally:
            module.lock.release()

    def _run(self, what: str, op: Callable[[Any], T]) -> T:
        """Run ``op(session)`` under the module lock; reopen the session and retry once if it
        was lost; translate every PKCS#11 error into a :class:`SignpeerError`."""
        module = self._module
        if self._pin is None or module is None:
            raise CryptoTokenOfflineError(
                f"crypto token of worker '{self.config.name}' is not activated; run {self._activate_hint}")
        with module.lock:
            try:
                if self._session is None or self._lost is not None:
                    self._reconnect_locked(self._lost or "no session")
                try:
                    return op(self._session)
                except RECONNECT_ERRORS as exc:
                    log.warning("worker %s: %s while %s; reopening the session", self.config.name,
                                type(exc).__name__, what)
                    self._reconnect_locked(type(exc).__name__)
                    token_metrics.retries.labels(self.config.name).inc()
                    return op(self._session)
            except SignpeerError:
                raise
            except RECONNECT_ERRORS as exc:
                self._lost = f"the PKCS#11 token is unavailable ({type(exc).__name__} while {what})"
                self._next_reconnect = time.monotonic() + RECONNECT_INTERVAL
                raise CryptoTokenOfflineError(self._lost) from exc
            except pkcs11.PKCS11Error as exc:
                raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: pkcs11.PKCS11Error) -> SignpeerError:
        name = type(exc).__name__
        if isinstance(exc, (p11e.TemplateInconsistent, p11e.TemplateIncomplete, p11e.AttributeValueInvalid,
                            p11e.AttributeTypeInvalid, p11e.AttributeReadOnly)):
            return ConfigurationError(f"the token rejected the attributes while {what} ({name}): "
                                      f"check ATTRIBUTES / KEYGENERATIONATTRIBUTES")
        if isinstance(exc, (p11e.MechanismInvalid, p11e.MechanismParamInvalid, p11e.KeySizeRange,
                            p11e.DomainParamsInvalid, p11e.FunctionNotSupported)):
            return BadRequestError(f"the token does not support this while {what} ({name})")
        if isinstance(exc, (p11e.DeviceMemory, p11e.TokenWriteProtected, p11e.SessionReadOnly)):
            return CryptoTokenOfflineError(f"the token cannot store objects while {what} ({name})")
        if isinstance(exc, TRANSIENT_ERRORS + HANDLE_ERRORS):
            return CryptoTokenOfflineError(f"the PKCS#11 token failed while {what} ({name}); "
                                           f"if this persists, check the HSM and its log")
        return SignpeerError(f"the PKCS#11 token failed while {what}: {name} {exc}".rstrip())

    # -- object lookups (inside _run) ------------------------------------------------------
    @staticmethod
    def _search(session: Any, template: dict[Attribute, Any]) -> list[Any]:
        # list() runs the search to the end so C_FindObjectsFinal happens now, under the lock.
        # python-pkcs11 reads attributes of each object it finds; another process may delete
        # an object in between, which surfaces as a stale handle: search again. SoftHSM2's file
        # store also fails a search now and then (FunctionFailed/GeneralError) while another
        # process writes the token: a search changes nothing, so it is safe to repeat.
        for attempt in range(3):
            try:
                return list(session.get_objects(template))
            except HANDLE_ERRORS + (p11e.FunctionFailed, p11e.GeneralError):
                if attempt == 2:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @classmethod
    def _find(cls, session: Any, object_class: ObjectClass, alias: str) -> list[Any]:
        return cls._search(session, {Attribute.CLASS: object_class, Attribute.LABEL: alias})

    def _private_object(self, session: Any, alias: str) -> Any:
        obj = self._objects.get(alias)
        if obj is not None:
            return obj
        found = self._find(session, ObjectClass.PRIVATE_KEY, alias)
        if not found:
            self._check_logged_in(session)
            raise KeyNotFoundError(self._no_key(alias))
        if len(found) > 1:
            log.warning("worker %s: %d private keys are labelled '%s'; using the first", self.config.name,
                        len(found), alias)
        if self.cache_keys:
            self._objects[alias] = found[0]
        return found[0]

    def _check_logged_in(self, session: Any) -> None:
        """Private objects are invisible without a login, and SoftHSM2 reports a lost login as
        an invalid key handle: tell "no such key" apart from "logged out" before saying the first."""
        module = self._module
        assert module is not None
        info = module.raw.session_info(session.handle)
        if info is None:
            raise p11e.SessionHandleInvalid()
        if info[1] not in (p11mod.CKS_RO_USER_FUNCTIONS, p11mod.CKS_RW_USER_FUNCTIONS):
            raise p11e.UserNotLoggedIn()

    def _no_key(self, alias: str) -> str:
        return (f"no key '{alias}' in the {self._where}; generate it with "
                f"signpeer generatekey {self.config.name} -keyalg EC -keyspec secp256r1 -alias {alias}")

    def _public_of(self, session: Any, alias: str) -> PublicKey:
        pubs = self._find(session, ObjectClass.PUBLIC_KEY, alias)
        if pubs:
            return _public_from_object(pubs[0], alias)
        # Keys made elsewhere may keep the public half only in a certificate, or not at all.
        for cert in self._certificates(session, alias):
            return cert.public_key()  # type: ignore[return-value]  # the certificate of a token key
        priv = self._private_object(session, alias)
        if priv.key_type == KeyType.RSA:
            return rsa.RSAPublicNumbers(int.from_bytes(priv[Attribute.PUBLIC_EXPONENT], "big"),
                                        int.from_bytes(priv[Attribute.MODULUS], "big")).public_key()
        raise KeyNotFoundError(f"key '{alias}' has no public key object or certificate in the token; "
                               f"import its certificate with signpeer importcertificatechain")

    def _certificates(self, session: Any, alias: str) -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(o[Attribute.VALUE])
                for o in self._find(session, ObjectClass.CERTIFICATE, alias)]

    # -- keys ------------------------------------------------------------------------------
    def sign_with_key(self, alias: str, mechanism: pkcs11.Mechanism, data: bytes, param: Any = None) -> bytes:
        """One signature with the key ``alias`` (called by the wrapper keys in :mod:`.keys`)."""
        # Fast path for the hot loop: a cached handle on a healthy session. Any failure falls
        # through to _run, which reconnects, looks the key up again and retries.
        module, key = self._module, self._objects.get(alias)
        if key is not None and module is not None and self._lost is None and self._pin is not None:
            with module.lock:
                if alias in self._objects and self._objects[alias] is key:
                    try:
                        return key.sign(data, mechanism=mechanism, mechanism_param=param)
                    except RECONNECT_ERRORS + HANDLE_ERRORS + TRANSIENT_ERRORS:
                        pass

        def op(session: Any) -> bytes:
            key = self._private_object(session, alias)
            try:
                return key.sign(data, mechanism=mechanism, mechanism_param=param)
            except HANDLE_ERRORS as exc:
                self._objects.pop(alias, None)
                self._wrappers.pop(alias, None)
                try:
                    key = self._private_object(session, alias)
                except KeyNotFoundError:
                    # Seen with SoftHSM2 while another process used the token: the handle
                    # went stale and the search briefly came back empty. A fresh session
                    # (via _run's single retry) tells a transient from a removed key.
                    raise p11e.SessionHandleInvalid() from exc
                return key.sign(data, mechanism=mechanism, mechanism_param=param)
            except TRANSIENT_ERRORS as exc:
                log.warning("worker %s: %s signing with key '%s'; retrying once", self.config.name,
                            type(exc).__name__, alias)
                self._objects.pop(alias, None)
                try:
                    key = self._private_object(session, alias)
                except KeyNotFoundError:
                    # The same SoftHSM2 two-writer moment as above (seen with a key this process
                    # had just made): let _run's fresh session tell it from a removed key.
                    raise p11e.SessionHandleInvalid() from exc
                return key.sign(data, mechanism=mechanism, mechanism_param=param)

        return self._run("signing", op)

    def key_aliases(self) -> list[str]:
        def op(session: Any) -> list[str]:
            labels = set()
            for obj in self._search(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                try:
                    labels.add(obj.label)
                except HANDLE_ERRORS + (AttributeError,):
                    # Removed by another process since the search (python-pkcs11 then returns a
                    # bare Object whose class could not be read, without a label).
                    pass
            return sorted(label for label in labels if label)

        return self._run("listing keys", op)

    def private_key(self, alias: str) -> PrivateKey:
        wrapper = self._wrappers.get(alias)
        if wrapper is not None:
            return wrapper

        def op(session: Any) -> PrivateKey:
            self._private_object(session, alias)
            key = wrap_key(self, alias, self._public_of(session, alias))
            if self.cache_keys:
                self._wrappers[alias] = key
            return key

        return self._run(f"looking up key '{alias}'", op)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Sign inline when the device is idle and the key fast, else in a worker thread.

        A thread hop costs 80-110 µs here, more than an ECDSA signature in SoftHSM2 (~60 µs),
        and GIL hand-offs made many concurrent hops slower still. So when the key's recent
        signatures took under :data:`INLINE_LIMIT` (see :class:`.keys.SignTiming`) and no
        other thread is using the module (the lock is taken without waiting and held for the
        call), the call runs on the caller's thread. Slow keys (RSA in SoftHSM2 ~0.8 ms,
        network HSMs more) and a busy module go to a worker thread, so the event loop is never
        held up for long.
        """
        module = self._module
        key = None
        for arg in args:  # the signer passes (request, handle, algorithm)
            if isinstance(arg, KeyHandle):
                key = arg.private_key
                break
        if (module is not None and isinstance(key, TokenKey) and key.timing.fast(INLINE_LIMIT)
                and module.lock.acquire(blocking=False)):
            try:
                return fn(*args)
            finally:
                module.lock.release()
        return await anyio.to_thread.run_sync(fn, *args)

    def prepared_signer(self, alias: str, algorithm: SignatureAlgorithm) -> PreparedSigner | None:
        """``PlainSigner``'s inline hot path (:mod:`.prepared`): bound to this token's module lock
        and key caches, so it follows deactivation, reconnection and key removal by itself.
        None without CACHE_PRIVATEKEY (every use searches the token) or a loaded module."""
        module = self._module
        if module is None or not self.cache_keys:
            return None
        return prepare_signer(self, module.lock, self._objects, self._wrappers, alias, algorithm, INLINE_LIMIT)

    async def acquire(self, alias: str, chain: list[x509.Certificate], request: RequestInfo) -> KeyHandle:
        key = self._wrappers.get(alias)
        if key is None:  # a search in the token: not on the event loop
            key = await anyio.to_thread.run_sync(self.private_key, alias)
        return KeyHandle(alias=alias, private_key=key, chain=chain)

    def _keypair_template(self, spec: KeySpec, token_object: bool = True) -> KeyPairTemplate:
        """Key type, length and the public/private templates of a new key pair (with ATTRIBUTES).

        Every key pair this token makes, kept keys and one-time keys alike, starts here.
        ``token_object=False`` makes session objects: ``CKA_TOKEN`` is set false on both halves
        whatever ATTRIBUTES say, so they never reach the token's storage.
        """
        public_extra, private_extra = self.keygen_attributes.templates(spec.kind)
        public_t: dict[Attribute, Any] = {Attribute.VERIFY: True, **public_extra}
        private_t: dict[Attribute, Any] = {Attribute.SIGN: True, Attribute.SENSITIVE: True,
                                           Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True, **private_extra}
        if not token_object:
            public_t[Attribute.TOKEN] = private_t[Attribute.TOKEN] = False
        if spec.kind == "RSA":
            key_type, length = KeyType.RSA, spec.bits
            public_t[Attribute.PUBLIC_EXPONENT] = spec.exponent.to_bytes((spec.exponent.bit_length() + 7) // 8, "big")
        elif spec.kind == "EC":
            key_type, length = KeyType.EC, None
            public_t[Attribute.EC_PARAMS] = encode_named_curve_parameters(spec.curve)
        else:
            key_type, length = KeyType.EC_EDWARDS, None
            public_t[Attribute.EC_PARAMS] = _ED25519_PARAMS
        return KeyPairTemplate(key_type, length, public_t, private_t, token_object)

    def _generate_keypair(self, session: Any, alias: str, template: KeyPairTemplate) -> tuple[Any, Any, PublicKey]:
        """(public, private) objects of a new key pair labelled ``alias`` and its public key as read
        back from the token (inside :meth:`_run`)."""
        def generate() -> tuple[Any, Any, PublicKey]:
            pub, priv = session.generate_keypair(
                template.key_type, template.length, id=alias.encode("utf-8"), label=alias,
                store=template.token_object, capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=template.public, private_template=template.private)
            return pub, priv, _public_from_object(pub, alias)

        try:
            return generate()
        except KEYGEN_RETRY_ERRORS as exc:
            if not template.token_object:
                raise
            # SoftHSM2's file store fails now and then when another process reads or writes the
            # token at the same moment: the generation fails, the new objects' handles are
            # already invalid, or the new public key reads back with empty attributes. Clear any
            # half-written pair and try once more.
            log.warning("worker %s: %s generating key '%s'; retrying once", self.config.name,
                        type(exc).__name__, alias)
            self._destroy_pair(session, alias)
            try:
                return generate()
            except UnreadablePublicKeyError:
                self._destroy_pair(session, alias)  # no half-usable key left behind
                raise

    def _destroy_pair(self, session: Any, alias: str) -> None:
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for obj in self._find(session, cls, alias):
                obj.destroy()

    def generate_key(self, alias: str, keyalg: str, keyspec: str) -> None:
        alias = alias.strip()
        if not alias:
            raise BadRequestError("the key alias is empty; give one with -alias")
        spec = parse_key_spec(keyalg, keyspec)
        template = self._keypair_template(spec)

        def op(session: Any) -> None:
            if self._find(session, ObjectClass.PRIVATE_KEY, alias):
                raise ConflictError(f"the token already has a key '{alias}'; choose another alias "
                                    f"or remove it with signpeer removekey {self.config.name} {alias}")
            _pub, priv, public = self._generate_keypair(session, alias, template)
            if self.cache_keys:
                self._objects[alias] = priv
                self._wrappers[alias] = wrap_key(self, alias, public)

        self._run(f"generating key '{alias}'", op)
        log.info("worker %s: generated %s key '%s' in the PKCS#11 token", self.config.name, spec.describe(), alias)

    # -- one-time keys (signpeer-onetimecrypto's KEYSTORAGE=SESSION) -------------------------
    def generate_session_key(self, alias: str, keyalg: str, keyspec: str, token_object: bool = False) -> PrivateKey:
        """A new key pair for short use, returned as a wrapper key that signs in the token.

        By default both halves are session objects (``CKA_TOKEN=false``): ~0.3 ms instead of
        ~20 ms in SoftHSM2, never written to the token's storage, and gone by themselves when
        the session closes or the process ends, so a crash leaves nothing behind.
        ``token_object=True`` makes token objects instead (for HSMs that cannot sign with
        session objects). The alias is not checked for an existing key (callers make unique
        ones), the handle is registered for :meth:`sign_with_key` whatever
        ``CACHE_PRIVATEKEY`` says, and :meth:`destroy_session_key` deletes the pair.
        """
        alias = alias.strip()
        if not alias:
            raise BadRequestError("the key alias is empty")
        template = self._keypair_template(parse_key_spec(keyalg, keyspec), token_object=token_object)

        def op(session: Any) -> PublicKey:
            # Reading the public key back is a PKCS#11 call too: under the lock, like every call.
            pub, priv, public = self._generate_keypair(session, alias, template)
            # Registered under the lock: a reopened session (which forgets them) cannot come between.
            self._objects[alias] = priv  # sign_with_key finds it without a search
            self._session_keys[alias] = (pub, priv)
            return public

        public = self._run(f"generating one-time key '{alias}'", op)
        return wrap_key(self, alias, public)

    def destroy_session_key(self, alias: str) -> None:
        """Delete a key pair made by :meth:`generate_session_key`; no error when it is gone already.

        Deleted by its object handles, without a search. After the session was reopened the
        handles are unknown (session objects died with the old session): then whatever still
        carries the alias (token objects) is searched for and deleted.
        """
        def op(session: Any) -> None:
            # Under the lock: handles known now belong to the open session (see _close_session_locked).
            handles = self._session_keys.pop(alias, None)
            self._objects.pop(alias, None)
            self._wrappers.pop(alias, None)
            objects = handles if handles is not None else [
                obj for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY) for obj in self._find(session, cls, alias)]
            for obj in objects:
                try:
                    obj.destroy()
                except (*HANDLE_ERRORS, *RECONNECT_ERRORS):
                    pass  # gone with its session, or destroyed by another process: nothing left to delete

        try:
            self._run(f"deleting one-time key '{alias}'", op)
        finally:
            self._session_keys.pop(alias, None)  # the token was offline: forget it all the same
            self._objects.pop(alias, None)

    def remove_key(self, alias: str) -> None:
        def op(session: Any) -> None:
            privs = self._find(session, ObjectClass.PRIVATE_KEY, alias)
            others = self._find(session, ObjectClass.PUBLIC_KEY, alias) + self._find(
                session, ObjectClass.CERTIFICATE, alias)
            if not privs and not others:
                raise KeyNotFoundError(f"no key '{alias}' in the {self._where}")
            # Without a private key, whatever is left under the alias (a public key or certificate
            # orphaned by an interrupted generation or removal) goes too.
            self._objects.pop(alias, None)
            self._wrappers.pop(alias, None)
            for obj in privs + others:
                try:
                    obj.destroy()
                except HANDLE_ERRORS:
                    pass  # already destroyed (by another process)

        self._run(f"removing key '{alias}'", op)

    # -- certificates ----------------------------------------------------------------------
    def certificate_chain(self, alias: str) -> list[x509.Certificate]:
        if not self.is_active:
            return []

        def op(session: Any) -> list[x509.Certificate]:
            return order_chain(self._certificates(session, alias))

        return self._run(f"reading the certificates of '{alias}'", op)

    def import_certificate_chain(self, alias: str, chain: list[x509.Certificate]) -> None:
        if not chain:
            raise BadRequestError("the certificate chain is empty")
        public = self.private_key(alias).public_key()
        if public_key_der(chain[0]) != public_key_der(public):
            raise ConflictError(f"the first certificate of the chain is not for key '{alias}' "
                                f"(its public key differs); put the signer certificate first")
        key_id = alias.encode("utf-8")

        def op(session: Any) -> None:
            for obj in self._find(session, ObjectClass.CERTIFICATE, alias):
                obj.destroy()
            for i, cert in enumerate(chain):
                attrs = {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: alias,
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.ISSUER: cert.issuer.public_bytes(),
                    Attribute.SERIAL_NUMBER: core.Integer(cert.serial_number).dump(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
                if i == 0:
                    attrs[Attribute.ID] = key_id  # links the leaf to the key pair
                session.create_object(attrs)

        self._run(f"storing the certificates of '{alias}'", op)


class UnreadablePublicKeyError(CryptoTokenOfflineError):
    """The token answered with a public key object whose attributes do not parse."""


#: What a token-object key generation retries once (see ``_generate_keypair``).
KEYGEN_RETRY_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, *HANDLE_ERRORS, UnreadablePublicKeyError)


def _public_from_object(obj: Any, alias: str) -> PublicKey:
    """A ``cryptography`` public key from a PKCS#11 public key object.

    Attributes that do not parse (e.g. read back empty while another process rewrites a SoftHSM2
    file store) raise :class:`UnreadablePublicKeyError`, never a bare ``ValueError``."""
    try:
        return _parse_public_object(obj)
    except (ValueError, TypeError) as exc:
        raise UnreadablePublicKeyError(
            f"the PKCS#11 token returned an unreadable public key for '{alias}' ({exc})") from exc


def _parse_public_object(obj: Any) -> PublicKey:
    key_type = obj.key_type
    if key_type == KeyType.RSA:
        return rsa.RSAPublicNumbers(int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big"),
                                    int.from_bytes(obj[Attribute.MODULUS], "big")).public_key()
    if key_type == KeyType.EC:
        return serialization.load_der_public_key(encode_ec_public_key(obj))  # type: ignore[return-value]  # an EC point
    if key_type == KeyType.EC_EDWARDS:
        point = obj[Attribute.EC_POINT]
        raw = point if len(point) == 32 else bytes(core.OctetString.load(point))
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise SignpeerError(f"unsupported key type {key_type!r} in the token")
