"""The PKCS#11 token's configuration, its one session and the locking and recovery discipline.

:class:`Pkcs11Session` is the base of :class:`~signpeer_pkcs11token.token.Pkcs11CryptoToken`: it reads
the slot selection, loads the module, finds the token, opens and logs in the session, reopens it when
it is lost (:meth:`Pkcs11Session._run`: take the module lock, use the one session, on a lost session
reopen and retry once) and translates PKCS#11 errors into :class:`SignpeerError`. Every method whose
name ends in ``_locked`` expects the caller to hold the module lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11e

from signpeer_core.api import (
    BadRequestError,
    ConfigurationError,
    CryptoToken,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    PrivateKey,
    SignpeerError,
    WorkerConfig,
)
from signpeer_pkcs11token import metrics as token_metrics
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.attributes import parse_attributes

if TYPE_CHECKING:
    from signpeer_core.api import KeySpec, Services
    from signpeer_pkcs11token.keys import SignTiming

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


class Pkcs11Session(CryptoToken):
    """Configuration, session and recovery of a PKCS#11 token (the base of ``Pkcs11CryptoToken``)."""

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
        #: One signature timing shared by the session keys of one spec (generate_session_key).
        self._session_timings: dict[tuple[KeySpec, bool], SignTiming] = {}

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
