"""``signpeer serve``: uvicorn with TLS, optional client certificates, one or more processes.

What happens, in order, so that every mistake is reported before anything listens:

1. The TLS files are checked: server certificate and key load into an SSL context, each
   client CA file loads as trusted certificates. Several CA files are concatenated into one
   bundle under ``<home>/run/`` (uvicorn takes one ``ssl_ca_certs`` file).
2. The listening socket is bound here, not by uvicorn, so "port in use" is a clear error
   and ``--port 0`` works (the chosen port is written to ``server.json``).
3. ``<home>/run/server.json`` (``{"url", "pid", ...}``) is written; CLI commands that need the
   running server's memory (``activatecryptotoken``) read it. It is removed on a clean exit.
4. One process: the app is built here (:func:`signpeer_core.app.create_app`) and served on the
   socket. ``--workers N``: uvicorn's supervisor starts N processes that each import
   :func:`signpeer_core.app.create_app_from_env` (factory), with the settings passed through
   ``SIGNPEER_*`` environment variables. Each process listens on a socket of its own, all bound to
   the one port with ``SO_REUSEPORT``, so the kernel spreads new connections over the processes
   (:func:`bind_sockets`); with one shared socket, the first process to wake took every connection
   waiting in the backlog, and a CA peer's long polls, which connect together, all landed on it.

Client certificates are requested but not required (``CERT_OPTIONAL``): workers
(``AUTHTYPE=CLIENTCERT``) and the admin and peer endpoints decide who must present one. A
certificate that is presented must chain to one of the client CA files, or the handshake fails.

:func:`call_server` is the client side used by CLI commands: it finds the server through
``server.json`` and calls it with the administrator certificate ``<home>/tls/admin.pem``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from signpeer_core import affinity
from signpeer_core.errors import ConfigurationError, DatabaseUnavailableError, ServiceUnavailableError
from signpeer_core.settings import _ENV_KEYS, Settings

# The serving modules (uvicorn, Starlette, the app, metrics, tracing) are imported by the functions
# that serve: the CLI commands that only call a running server (call_server) import this module too.

log = logging.getLogger("signpeer.server")

#: uvicorn's own loggers stay at this level unless the settings ask for DEBUG.
_UVICORN_LEVEL = "warning"


def server_info_path(settings: Settings) -> Path:
    """``<home>/run/server.json``: where a running server says where it listens."""
    return settings.home / "run" / "server.json"


def _readable(path: Path, what: str, option: str) -> None:
    if not path.exists():
        raise ConfigurationError(f"{what} {path} does not exist; create it with signpeer init or pass {option}")
    if not os.access(path, os.R_OK) or path.is_dir():
        raise ConfigurationError(f"{what} {path} is not a readable file; check its permissions or pass {option}")


def check_tls_files(settings: Settings) -> Path | None:
    """Validate the TLS files; return the client CA file to use (a bundle when there are several)."""
    from signpeer_core import clientcas

    certfile, keyfile = settings.tls_certfile, settings.tls_keyfile
    _readable(certfile, "server certificate", "--certfile")
    _readable(keyfile, "server key", "--keyfile")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"cannot use server certificate {certfile} with key {keyfile}: {exc.reason or exc}; they must be PEM "
            f"files and the key must belong to the certificate") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {certfile} or {keyfile}: {exc}") from None
    cafiles = settings.tls_client_cafiles
    existing = []
    for ca in cafiles:
        if not ca.exists() and not settings.client_cafiles:
            continue  # the default client-ca.pem is optional: without it no client certificates
        _readable(ca, "client CA file", "--client-cafile")
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ConfigurationError(f"client CA file {ca} holds no usable PEM certificate: {exc.reason or exc}") \
                from None
        existing.append(ca)
    if not existing:
        return None
    clientcas.load(existing).check_unique()  # two CAs of one DN could both issue "matching" certificates
    if len(existing) == 1:
        return existing[0]
    bundle = settings.home / "run" / "client-ca-bundle.pem"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    parts = [p.read_text().strip() + "\n" for p in existing]
    tmp = bundle.with_name(bundle.name + f".{os.getpid()}.tmp")
    tmp.write_text("".join(parts))
    os.replace(tmp, bundle)
    return bundle


def server_ssl_context(settings: Settings, cafile: Path | None) -> ssl.SSLContext:
    """The TLS context of every connection (the connection gate does the handshakes).

    Client certificates are asked for, not required (``CERT_OPTIONAL``), when there is a client
    CA file. No renegotiation, no compression, no session tickets kept for clients that never
    come back; OpenSSL's read and write buffers of an idle connection are freed (Python sets
    ``SSL_MODE_RELEASE_BUFFERS``).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def install_connection_guard(settings: Settings, cafile: Path | None) -> None:
    """This process's connection limits and TLS context (:mod:`signpeer_core.connections`)."""
    from signpeer_core.connectionlimits import Limits, effective_max_connections, install
    from signpeer_core.tlsrefusals import RefusalWatch

    context = server_ssl_context(settings, cafile)
    # The guard makes the TLS handshakes: handshakes it refuses for a client certificate are
    # reported from this context (tlsrefusals.py). An established connection moves to its twin
    # without the watch, which OpenSSL would otherwise call for every record of every request.
    RefusalWatch().install(context)
    install(Limits(max_connections=effective_max_connections(settings.max_connections, settings.workers),
                   max_connections_per_address=settings.max_connections_per_address,
                   tls_handshake_timeout=settings.tls_handshake_timeout, header_timeout=settings.header_timeout,
                   body_timeout=settings.body_timeout),
            context, server_ssl_context(settings, cafile))


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The listening socket, with a clear error when the address is taken or wrong.

    ``reuse_port`` sets ``SO_REUSEPORT``: a socket of a group that :func:`bind_sockets` binds.
    """
    if not 0 <= port <= 65535:  # the resolver would take 70000 modulo 65536 and listen on 4464
        raise ConfigurationError(f"port {port} is not a TCP port; use 1 to 65535 (or 0 for a free port) with --port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on host '{host}': {exc.strerror}; use an address such as "
                                 f"127.0.0.1 or 0.0.0.0 (--host)") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(f"port {port} on {host} is already in use (another signpeer serve?); stop "
                                     f"that process or choose another port with --port") from None
        if exc.errno == errno.EACCES:
            raise ConfigurationError(f"not allowed to listen on port {port} (ports below 1024 need privileges); "
                                     f"choose another with --port") from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port, one per server process (``SO_REUSEPORT``).

    The kernel hands each new connection to one of them by a hash of its addresses and ports, so
    connections opened together (a CA peer's long polls, a client's pool) spread over the
    processes; each process accepts only from its own socket. The port is first bound by a plain
    socket, closed before the group binds: sockets with ``SO_REUSEPORT`` of the same user would
    share a port with another server's group without an error, a plain one is refused there, so
    "port in use" stays a clear error (and ``--port 0`` picks the port).
    """
    probe = bind_socket(host, port)
    port = probe.getsockname()[1]
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(bind_socket(host, port, reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"https://[{shown}]:{port}" if ":" in shown else f"https://{shown}:{port}"


def settings_env(settings: Settings) -> dict[str, str]:
    """``SIGNPEER_*`` variables that reproduce ``settings`` in another process."""
    env = {"SIGNPEER_HOME": str(settings.home)}
    for f in fields(Settings):
        if f.name in _ENV_KEYS:
            value = getattr(settings, f.name)
            env[_ENV_KEYS[f.name]] = os.pathsep.join(value) if isinstance(value, tuple) else str(value)
    return env


def serve(settings: Settings, http: str = "httptools") -> int:
    """Run the server until interrupted; returns the exit status."""
    import uvicorn

    from signpeer_core import tracing
    from signpeer_core.logconfig import configure_logging
    from signpeer_core.metrics import prepare_multiprocess
    from signpeer_core.mtls import WatchingConfig, protocol_class

    configure_logging(settings)
    tracing.check(settings)  # an unknown mode or a missing extra is said before anything listens
    affinity.cpu_for(settings.cpu_affinity, 0)  # likewise a cpu_affinity that cannot be applied
    # The key that seals activation codes shared by this server's processes: fresh per run, in
    # memory and in the children's environment only.
    settings = replace(settings, activation_secret=secrets.token_hex(32))
    cafile = check_tls_files(settings)
    if settings.workers > 1:
        sockets = bind_sockets(settings.host, settings.port, settings.workers)
    else:
        sockets = [bind_socket(settings.host, settings.port)]
    port = sockets[0].getsockname()[1]
    # TLS is not uvicorn's: the connection gate does the handshake after its limits (connections.py).
    common: dict[str, Any] = dict(
        http=protocol_class(http, gate=True),
        timeout_keep_alive=settings.timeout_keep_alive,
        access_log=False,  # the worker log (signpeer.worker) is the per-request log
        log_level="debug" if settings.log_level.upper() == "DEBUG" else _UVICORN_LEVEL,
        server_header=False,
        lifespan="on",
    )
    info_path = server_info_path(settings)
    _forget_activations(settings)
    try:
        if settings.workers > 1:
            if settings.metrics:
                # Each process writes its metrics to files there; a scrape of any one adds them up.
                prepare_multiprocess(settings.home / "run" / "metrics")
            # Children are spawned: they rebuild the settings from the environment.
            os.environ.update(settings_env(settings) | {"SIGNPEER_PORT": str(port)})
            config = WatchingConfig("signpeer_core.app:create_app_from_env", factory=True,
                                    workers=settings.workers, **common)
            _write_info(info_path, settings, port)
            _supervisor()(config, sockets=sockets).run()
            return 0
        from signpeer_core.app import create_app
        from signpeer_core.services import Services

        affinity.pin(settings.cpu_affinity, 0)  # before the threads of the services start
        install_connection_guard(settings, cafile)
        settings = replace(settings, port=port)  # the port chosen for --port 0: the registry's address
        tracing.start(settings)
        services = Services.open(settings)
        config = WatchingConfig(create_app(services, owns_services=True, freeze_startup=True), **common)
        server = uvicorn.Server(config)
        _write_info(info_path, settings, port)
        # uvicorn re-raises the signal that stopped it once it has shut down; with the default
        # handlers that would kill the process before server.json is removed. A stop request
        # is a clean exit here.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _ignore_signal)
        server.run(sockets=sockets)
        return 0 if server.started else 1
    finally:
        _remove_info(info_path)
        for sock in sockets:
            sock.close()


def _supervisor() -> Any:
    """uvicorn's supervisor, with each process on its own socket of :func:`bind_sockets`, and
    ``SIGHUP`` reopening the log files (of itself and of each process) instead of restarting the
    processes, so that logrotate needs no restart.

    uvicorn gives every process all the sockets it was given; here process ``i`` gets socket
    ``i`` only, and the process that replaces a dead one gets the dead one's socket (which the
    supervisor keeps open meanwhile: connections the kernel hands to it wait in its backlog until
    the replacement accepts them). The number of processes is ``--workers``: ``SIGTTIN`` and
    ``SIGTTOU`` (uvicorn's one more / one less) are refused, a socket without a process would
    leave the connections the kernel hands to it unanswered.
    """
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    from signpeer_core.logconfig import reopen_log_file

    class Supervisor(Multiprocess):
        def init_processes(self) -> None:
            for index, sock in enumerate(self.sockets):
                process = Process(self.config, [sock])
                with _process_index(index):  # its CPU under cpu_affinity
                    process.start()
                self.processes.append(process)

        def keep_subprocess_alive(self) -> None:
            # uvicorn's check, process by process, so that a replacement is given the socket of
            # the process it replaces (uvicorn's own would give it every socket).
            processes, sockets = self.processes, self.sockets
            try:
                for index, sock in enumerate(sockets):
                    self.processes, self.sockets = [processes[index]], [sock]
                    with _process_index(index):  # a replacement takes the CPU of the dead one
                        super().keep_subprocess_alive()
                    processes[index] = self.processes[0]
            finally:
                self.processes, self.sockets = processes, sockets

        def handle_ttin(self) -> None:
            log.warning("SIGTTIN ignored: the number of server processes is serve's --workers")

        def handle_ttou(self) -> None:
            log.warning("SIGTTOU ignored: the number of server processes is serve's --workers")

        def handle_hup(self) -> None:
            reopen_log_file()
            for process in self.processes:
                pid = process.process.pid
                if pid is not None and process.process.exitcode is None:
                    os.kill(pid, signal.SIGHUP)

    return Supervisor


@contextmanager
def _process_index(index: int) -> Iterator[None]:
    """``SIGNPEER_PROCESS_INDEX`` for the process started meanwhile (spawned: it copies the
    environment at its start), and only for it."""
    os.environ[affinity.PROCESS_INDEX_ENV] = str(index)
    try:
        yield
    finally:
        os.environ.pop(affinity.PROCESS_INDEX_ENV, None)


def _forget_activations(settings: Settings) -> None:
    """Codes published by an earlier run were sealed with a secret that is gone."""
    from signpeer_core.storage import open_store
    from signpeer_core.storage.protection import KeySource

    store = open_store(settings.database, key=KeySource.for_settings(settings), node=settings.node_id)
    try:
        store.clear_token_activations(settings.node_id)
    except DatabaseUnavailableError as exc:  # a read-only data directory: serve what can be served
        log.warning("%s; the server signs, but every change is refused until it is writable", exc.message)
    finally:
        store.close()


def _ignore_signal(signum: int, frame: Any) -> None:
    return None


def _write_info(path: Path, settings: Settings, port: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"url": url_for(settings.host, port), "pid": os.getpid(), "host": settings.host, "port": port,
            "workers": settings.workers, "started": time.time()}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _remove_info(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


# -- the client side ---------------------------------------------------------------------------

def running_server(settings: Settings) -> dict[str, Any] | None:
    """What ``server.json`` says about the running server, or None when none runs."""
    path = server_info_path(settings)
    try:
        info = json.loads(path.read_text())
        if not info.get("url"):
            return None
        os.kill(int(info["pid"]), 0)
    except PermissionError:  # alive, but owned by another user
        return info
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return info


def call_server(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float = 30.0) -> dict[str, Any]:
    """Call the running server as the administrator (``<home>/tls/admin.pem`` + ``admin-key.pem``).

    Raises :class:`ServiceUnavailableError` when no server runs, and the matching
    :class:`SignpeerError` (with the server's message) for an error answer.
    """
    from signpeer_core.httpclient import HttpClient

    info = running_server(settings)
    if info is None:
        raise ServiceUnavailableError(f"no running server found ({server_info_path(settings)}); start it with "
                                      f"signpeer serve")
    tls = settings.home / "tls"
    cert, key, ca = tls / "admin.pem", tls / "admin-key.pem", tls / "ca.pem"
    for f in (cert, key):
        _readable(f, "administrator credential", "(created by signpeer init)")
    with HttpClient(info["url"], cafile=ca if ca.exists() else None, cert=cert, key=key, timeout=timeout,
                    max_connections=1, headers={"X-Keyfactor-Requested-With": "signpeer-cli"},
                    ca_hint=f"{ca}", cert_hint=f"{cert} and {key}") as client:
        data = client.json(method, path, json=body)
    if not isinstance(data, dict):
        raise ServiceUnavailableError(f"the answer of {info['url']} to {method} {path} is not a JSON object")
    return data
