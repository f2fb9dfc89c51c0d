"""Activation, deactivation and status of the PKCS#11 token, and its background checks.

Status reads (:attr:`~Pkcs11LifeCycle.is_active`, :meth:`~Pkcs11LifeCycle.offline_reasons`) answer
from what the token knows and never call into the module: a due reconnection, session probe or
auto-activation retry runs in a thread.
"""

from __future__ import annotations

import logging
import threading
import time

from signpeer_core.api import (
    ConfigurationError,
    CryptoTokenAuthenticationError,
    SignpeerError,
)
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.pinthrottle import THROTTLE
from signpeer_pkcs11token.session import RECONNECT_INTERVAL, Pkcs11Session

log = logging.getLogger("signpeer.pkcs11token")


class Pkcs11LifeCycle(Pkcs11Session):
    """Activation and status (a base of ``Pkcs11CryptoToken``)."""

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
