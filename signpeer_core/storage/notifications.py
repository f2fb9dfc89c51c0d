"""Notifications between the processes that share one database: pushed, not found by polling.

A process *publishes* a notification on a channel (``config``, ``applied``, ``ra.submitted``,
...) with a short text payload; every process that *listens* on that channel gets it within a
millisecond or two. What carries it depends on the database:

* **PostgreSQL**: ``NOTIFY`` (``pg_notify``) on one PostgreSQL channel, ``signpeer``, with the
  signpeer channel and the payload in the message. Sent inside the writer's transaction, so a
  listener is told only once the change it announces is committed (and never for a rolled-back
  one). Each listening process holds one dedicated connection, outside the pool, in a thread;
  when that connection breaks (PostgreSQL restarted) the thread reconnects with a back-off and
  then tells every listener it may have missed something (``payload`` None).
* **SQLite**: the processes are on one machine, so a UDP datagram on the loopback interface is
  the fastest way. Each listening process binds a socket on ``127.0.0.1`` and announces it as an
  empty file ``<port>-<pid>`` in the wake-up directory beside the database file
  (``signpeer.db.wake/``); a publisher sends one datagram to each, after its transaction
  commits. Files of processes that are gone are removed by the next publisher.

A notification says "look again", never "here is the data": a listener re-reads what it needs
from the database, so a lost datagram or a notification during a reconnect costs at most the
fallback check every listener also runs on a slow timer.

Callbacks run in the listener thread: they must be quick and must not block (typically
``loop.call_soon_threadsafe(event.set)``, or handing work to a thread).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("signpeer.notifications")

#: The one PostgreSQL channel signpeer listens on; signpeer's channels travel in the payload.
PG_CHANNEL = "signpeer"
#: A listener's callback: the payload, or None after a reconnection (something may be missed).
Callback = Callable[[str | None], None]
_SEPARATOR = "\x1f"  # unit separator: never in a channel name
_MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes


def encode(channel: str, payload: str) -> str:
    if _SEPARATOR in channel:
        raise ValueError(f"notification channel '{channel}' holds a control character")
    message = f"{channel}{_SEPARATOR}{payload}"
    if len(message.encode()) > _MAX_PAYLOAD:
        raise ValueError("a notification payload is limited to 7000 bytes; send an id and let listeners read")
    return message


def decode(message: str) -> tuple[str, str]:
    channel, _, payload = message.partition(_SEPARATOR)
    return channel, payload


class Subscriptions:
    """Callbacks by channel; safe to change while the listener thread dispatches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_channel: dict[str, list[Callback]] = {}

    def add(self, channel: str, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._by_channel.setdefault(channel, []).append(callback)

        def remove() -> None:
            with self._lock:
                callbacks = self._by_channel.get(channel, [])
                if callback in callbacks:
                    callbacks.remove(callback)
                if not callbacks:
                    self._by_channel.pop(channel, None)
        return remove

    def dispatch(self, channel: str, payload: str | None) -> None:
        with self._lock:
            callbacks = list(self._by_channel.get(channel, ()))
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:  # one listener's bug must not silence the others
                log.exception("a listener of notification channel '%s' failed", channel)

    def dispatch_all(self, payload: str | None) -> None:
        with self._lock:
            channels = list(self._by_channel)
        for channel in channels:
            self.dispatch(channel, payload)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._by_channel)


class WakeDirectory:
    """SQLite's carrier: UDP datagrams on loopback to every listening process of the machine."""

    def __init__(self, database_file: str) -> None:
        path = Path(database_file)
        self.directory = path.with_name(path.name + ".wake")
        self._send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._send.setblocking(False)
        self._entries: list[tuple[str, int]] | None = None
        self._entries_mtime = -1

    def send(self, messages: list[str]) -> None:
        """One datagram per message to every listener (after the publisher's commit)."""
        if not messages:
            return
        for name, port in self._listeners():
            for message in messages:
                try:
                    self._send.sendto(message.encode(), ("127.0.0.1", port))
                except BlockingIOError:  # a full send buffer: the fallback check catches up
                    log.debug("notification to port %s dropped (send buffer full)", port)
                except OSError as exc:
                    if exc.errno not in (errno.ECONNREFUSED,):
                        log.debug("notification to port %s failed: %s", port, exc)
            self._forget_if_gone(name)

    def _listeners(self) -> list[tuple[str, int]]:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return []
        if self._entries is None or mtime != self._entries_mtime:
            entries = []
            for name in os.listdir(self.directory):
                port, _, pid = name.partition("-")
                if port.isdigit() and pid.isdigit():
                    entries.append((name, int(port)))
            self._entries, self._entries_mtime = entries, mtime
        return self._entries

    def _forget_if_gone(self, name: str) -> None:
        pid = int(name.partition("-")[2])
        try:
            os.kill(pid, 0)
            return
        except PermissionError:
            return  # alive, another user's
        except OSError:
            pass
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / name)

    def listen(self, subscriptions: Subscriptions, stop: threading.Event) -> threading.Thread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)  # to notice stop
        port = sock.getsockname()[1]
        entry = self.directory / f"{port}-{os.getpid()}"
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            entry.touch(mode=0o600)
        except OSError as exc:  # e.g. a read-only data directory: the slow fallback checks still work
            log.warning("cannot announce this process in %s (%s): changes reach it only by the fallback check",
                        self.directory, exc.strerror or exc)

        def run() -> None:
            try:
                while not stop.is_set():
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        if stop.is_set():
                            return
                        raise
                    channel, payload = decode(data.decode(errors="replace"))
                    subscriptions.dispatch(channel, payload)
            finally:
                sock.close()
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

        thread = threading.Thread(target=run, name="signpeer-notify-udp", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._send.close()


class PostgresListener:
    """PostgreSQL's carrier on the listening side: ``LISTEN signpeer`` on a dedicated connection."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect  # a new psycopg connection (autocommit)
        self.ready = threading.Event()

    def listen(self, subscriptions: Subscriptions, stop: threading.Event) -> threading.Thread:
        def run() -> None:
            delay = 0.1
            first = True
            while not stop.is_set():
                conn = None
                try:
                    conn = self._connect()
                    conn.execute(f"LISTEN {PG_CHANNEL}")
                    self.ready.set()
                    if not first:
                        log.info("notifications: reconnected to the database")
                        subscriptions.dispatch_all(None)  # something may have been missed meanwhile
                    first, delay = False, 0.1
                    while not stop.is_set():
                        for notify in conn.notifies(timeout=0.5, stop_after=None):
                            channel, payload = decode(notify.payload)
                            subscriptions.dispatch(channel, payload)
                            if stop.is_set():
                                break
                except Exception as exc:  # the database went away: keep trying until it is back
                    if stop.is_set():
                        break
                    self.ready.clear()
                    log.warning("notifications: the database connection failed (%s); reconnecting in %.1f s",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                delay)
                    stop.wait(delay)
                    delay = min(5.0, delay * 2)
                finally:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()

        thread = threading.Thread(target=run, name="signpeer-notify-pg", daemon=True)
        thread.start()
        return thread


class Notifier:
    """The listening side of one process: one thread, started by the first :meth:`listen`."""

    def __init__(self, carrier: WakeDirectory | PostgresListener) -> None:
        self.carrier = carrier
        self.subscriptions = Subscriptions()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def listen(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for every notification on ``channel``; returns the way to stop."""
        remove = self.subscriptions.add(channel, callback)
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = self.carrier.listen(self.subscriptions, self._stop)
        return remove

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Whether the listener is connected (PostgreSQL; SQLite's socket is bound at once)."""
        if isinstance(self.carrier, PostgresListener):
            return self.carrier.ready.wait(timeout)
        return True

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=2)
