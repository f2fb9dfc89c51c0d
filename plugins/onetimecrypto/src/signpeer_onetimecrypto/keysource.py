"""Where one-time keys are made and destroyed, and the optional pool of pre-generated keys.

Three kinds of source, picked from the source token (the crypto worker the one-time worker's
``CRYPTOTOKEN`` names) and ``KEYSTORAGE``:

* :class:`SoftwareKeys` — a software token (not ``blocking``): keys are made in process memory
  with ``keys.generate_software_key`` and never written to the keystore file; "deleting" drops
  the last reference. Writing a PKCS#12 file per request would cost milliseconds and leave
  copies on disk for nothing.
* :class:`SessionObjectKeys` — an HSM, ``KEYSTORAGE=SESSION`` (default): PKCS#11 session
  objects (``CKA_TOKEN=false``). They cost ~0.3 ms instead of ~20 ms in SoftHSM2, and vanish
  by themselves when the session or the process ends, so a crash leaves nothing behind.
  The token offers ``generate_session_key(alias, keyalg, keyspec) -> PrivateKey`` and
  ``destroy_session_key(alias)`` (signpeer's ``Pkcs11CryptoToken`` does); a blocking token
  without them is a configuration error that points at ``KEYSTORAGE=TOKEN``.
* :class:`TokenObjectKeys` — ``KEYSTORAGE=TOKEN`` for HSMs that cannot sign with session
  objects: ordinary ``generate_key``/``remove_key``. Aliases carry the process id, and keys of
  processes that no longer run are swept when the worker loads.

A :class:`KeyPool` keeps ``KEYPOOL_SIZE`` keys generated ahead by a background thread, for RSA
whose generation takes 50-300 ms. Pooled keys are still used once each.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signpeer_core.api import (
    ConfigurationError,
    KeyNotFoundError,
    KeySpec,
    PrivateKey,
    SessionKeyToken,
    SignpeerError,
    generate_software_key,
)
from signpeer_onetimecrypto.metrics import keys_destroyed, keys_generated

if TYPE_CHECKING:
    from signpeer_core.api import CryptoToken

log = logging.getLogger("signpeer.onetime")

SESSION = "SESSION"
TOKEN = "TOKEN"


@dataclass(eq=False)
class OneTimeKey:
    """One key pair, used for one signature."""

    alias: str
    private_key: PrivateKey
    source: KeySource
    timings: dict[str, float] = field(default_factory=dict)
    destroyed: bool = False

    def destroy(self) -> None:
        """Delete the key; safe to call twice (release after an error path already did it)."""
        if self.destroyed:
            return
        self.destroyed = True
        self.source.destroy(self)


class KeySource(ABC):
    """Makes and destroys one-time keys in one source token."""

    #: True when generate/destroy block (HSM calls): callers run them in a thread.
    blocking: bool = False
    description: str = ""

    def __init__(self, token: CryptoToken, spec: KeySpec, keyalg: str, keyspec: str, prefix: str,
                 node: str = "", liveness: Liveness | None = None) -> None:
        self.token = token
        self.spec = spec
        self.keyalg = keyalg
        self.keyspec = keyspec
        self.prefix = prefix
        #: This node's id as it appears in aliases, and how to judge another node's process.
        self.node = node_tag(node)
        self.liveness = liveness
        self._lock = threading.Lock()
        self._live = 0

    def new_alias(self) -> str:
        # The node and process id let a start-up sweep tell orphans from keys another process,
        # of this node or another one sharing the HSM, is using.
        node = f"{self.node}." if self.node else ""
        return f"{self.prefix}{node}{os.getpid()}-{uuid.uuid4().hex[:16]}"

    def generate(self) -> OneTimeKey:
        alias = self.new_alias()
        # Counted before the call: a key being generated may already exist in the token.
        with self._lock:
            self._live += 1
        try:
            key = self._generate(alias)
        except BaseException:
            with self._lock:
                self._live -= 1
            raise
        keys_generated.inc()
        return OneTimeKey(alias, key, self)

    def destroy(self, key: OneTimeKey) -> None:
        try:
            self._destroy(key)
        except Exception:
            # A session object vanishes with its session anyway; log, never mask the real error.
            log.exception("deleting one-time key %s failed", key.alias)
        finally:
            # Counted down once the deletion has run, not before: ``live`` == 0 then means that no
            # deletion is still in flight in another thread.
            with self._lock:
                self._live -= 1
            keys_destroyed.inc()

    @property
    def live(self) -> int:
        """Keys generated (or being generated) and not yet destroyed by this source, pooled ones included."""
        return self._live

    @abstractmethod
    def _generate(self, alias: str) -> PrivateKey: ...

    @abstractmethod
    def _destroy(self, key: OneTimeKey) -> None: ...

    def sweep(self) -> int:
        """Remove keys left over by dead processes; the number removed."""
        return 0


class SoftwareKeys(KeySource):
    description = "software keys in process memory"

    def _generate(self, alias: str) -> PrivateKey:
        return generate_software_key(self.spec)

    def _destroy(self, key: OneTimeKey) -> None:
        # Python cannot wipe key memory; dropping the last reference is what "delete" can mean.
        key.private_key = None  # type: ignore[assignment]  # a destroyed key is never used again


class SessionObjectKeys(KeySource):
    description = "PKCS#11 session objects"
    blocking = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if not isinstance(self.token, SessionKeyToken):
            raise ConfigurationError(
                f"the crypto token type {self.token.type_name} cannot make session objects; "
                "set KEYSTORAGE=TOKEN to use token objects (slower; leftovers swept at start)")
        self._session_token: SessionKeyToken = self.token

    def _generate(self, alias: str) -> PrivateKey:
        return self._session_token.generate_session_key(alias, self.keyalg, self.keyspec)

    def _destroy(self, key: OneTimeKey) -> None:
        self._session_token.destroy_session_key(key.alias)


class TokenObjectKeys(KeySource):
    """One-time keys as token objects. Keys left by a process that died (kill -9, power loss) are
    swept once per source, as soon as the token is active: at load when it is active then, else
    after its activation (:meth:`sweep_once` from the worker's ``refresh``) or, for a token that
    became active by itself, before the first key is made."""

    description = "token objects (KEYSTORAGE=TOKEN)"
    blocking = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._swept = False
        self._sweep_lock = threading.Lock()

    def sweep_once(self) -> None:
        """Sweep if this source has not yet and the token is active (blocking: token calls)."""
        if self._swept or not self.token.is_active:
            return
        with self._sweep_lock:
            if self._swept:
                return
            try:
                self.sweep()
            except SignpeerError as exc:
                log.warning("sweeping one-time keys left by stopped processes failed: %s", exc.message)
            self._swept = True

    def _generate(self, alias: str) -> PrivateKey:
        if not self._swept:
            self.sweep_once()
        self.token.generate_key(alias, self.keyalg, self.keyspec)
        try:
            return self.token.private_key(alias)
        except BaseException:
            self.token.remove_key(alias)
            raise

    def _destroy(self, key: OneTimeKey) -> None:
        try:
            self.token.remove_key(key.alias)
        except KeyNotFoundError:
            pass

    def sweep(self) -> int:
        pattern = re.compile(re.escape(self.prefix) + r"(?:([A-Za-z0-9_-]+)\.)?(\d+)-[0-9a-f]{16}$")
        removed = 0
        for alias in self.token.key_aliases():
            m = pattern.match(alias)
            if not m or self._owner_alive(m.group(1) or "", int(m.group(2))):
                continue
            try:
                self.token.remove_key(alias)
                removed += 1
            except SignpeerError:
                pass
        if removed:
            log.info("removed %d one-time keys left over by stopped processes (prefix %s)", removed, self.prefix)
        return removed

    def _owner_alive(self, node: str, pid: int) -> bool:
        """A key of this node (or of an alias without one) is judged by its process id here; a key
        of another node by the node registry (alive when in doubt: the database is unreachable)."""
        if not node or node == self.node or self.liveness is None:
            return _process_alive(pid)
        try:
            return self.liveness(node, pid)
        except Exception as exc:
            log.warning("cannot tell whether process %s of node %s is alive (%s); its one-time keys stay",
                        pid, node, exc)
            return True


#: Whether process ``pid`` of node ``node`` (as in aliases: :func:`node_tag`) is alive.
Liveness = Callable[[str, int], bool]


def node_tag(node: str) -> str:
    """A node id as it appears in a one-time key's alias: letters, digits, ``_`` and ``-``."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in node)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_source(token: CryptoToken, storage: str, spec: KeySpec, keyalg: str, keyspec: str,
                prefix: str, node: str = "", liveness: Liveness | None = None) -> KeySource:
    """The key source for a source token and ``KEYSTORAGE``; a :class:`ConfigurationError` says why not."""
    storage = storage.strip().upper() or SESSION
    if storage not in (SESSION, TOKEN):
        raise ConfigurationError(f"KEYSTORAGE must be SESSION or TOKEN, not '{storage}'")
    args = (token, spec, keyalg, keyspec, prefix, node, liveness)
    if storage == TOKEN:
        return TokenObjectKeys(*args)
    if isinstance(token, SessionKeyToken) or token.blocking:
        return SessionObjectKeys(*args)
    return SoftwareKeys(*args)


class KeyPool:
    """Keys generated ahead by a daemon thread; :meth:`take` never waits for a full pool."""

    def __init__(self, source: KeySource, size: int) -> None:
        self.source = source
        self.size = size
        self._keys: queue.Queue[OneTimeKey] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._wanted = threading.Event()
        self._wanted.set()
        self.failures = 0
        #: The pool's fill level in /metrics (set by the worker that owns the pool).
        self.fill_gauge: Any = None
        self._thread = threading.Thread(target=self._fill, name=f"onetime-keypool-{source.prefix}", daemon=True)
        self._thread.start()

    #: Pause after a key is taken before making the next: the request that took it still needs
    #: the token (CSR, signature), and an HSM serializes calls, so a 300 ms RSA generation
    #: started at once would stall exactly the request the pool is there to speed up.
    refill_delay = 0.05

    def _fill(self) -> None:
        while not self._stop.is_set():
            if self._keys.full():
                self._wanted.wait(0.5)
                self._wanted.clear()
                continue
            if self._keys.qsize() and self.source.blocking:
                self._stop.wait(self.refill_delay)
            try:
                key = self.source.generate()
            except Exception:
                self.failures += 1
                log.exception("pre-generating a one-time key failed")
                self._stop.wait(1.0)
                continue
            try:
                self._keys.put_nowait(key)
            except queue.Full:
                key.destroy()
            self._report()

    def _report(self) -> None:
        if self.fill_gauge is not None:
            self.fill_gauge.set(self._keys.qsize())

    def take(self) -> OneTimeKey | None:
        """A pooled key, or None when the pool is empty (the caller generates one)."""
        try:
            key = self._keys.get_nowait()
        except queue.Empty:
            self._wanted.set()
            return None
        self._wanted.set()
        self._report()
        return key

    @property
    def available(self) -> int:
        return self._keys.qsize()

    def close(self) -> None:
        self._stop.set()
        self._wanted.set()
        self._thread.join(timeout=5)
        while True:
            try:
                self._keys.get_nowait().destroy()
            except queue.Empty:
                break
        self._report()
