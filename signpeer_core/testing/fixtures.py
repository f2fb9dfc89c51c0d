"""The pytest plugin of signpeer: fixtures for the core's tests and for any plugin's.

Registered with the ``pytest11`` entry point of signpeer-core, so pytest loads it wherever
signpeer-core is installed; nothing to import or list in a ``conftest.py``. It also registers
the test kit's :class:`~signpeer_core.testing.MemoryCryptoToken` for the test process and the
``signpeer`` subprocesses the tests start (``SIGNPEER_EXTRA_PLUGINS``).

Under pytest-xdist (``make test``: ``-n 2 --dist loadfile``) every worker process has its own
session: its own ``pki``, SoftHSM2 configuration and, with ``SIGNPEER_TEST_DATABASE_URL=start``,
its own PostgreSQL server.

* ``postgres`` (session): a real PostgreSQL server (:class:`~signpeer_core.testing.postgres.PostgresServer`);
  ``postgres.fresh_url()`` is a new, empty database on it. With ``SIGNPEER_TEST_DATABASE_URL``
  set (a server URL, or ``start`` for a server of the session) every ``home`` gets its own
  schema there instead of SQLite: the whole suite runs on PostgreSQL.
* ``pki`` (session): :func:`~signpeer_core.testing.make_pki` -- development CA, server
  certificate (localhost/127.0.0.1), ``pki.admin`` and ``pki.client`` client certificates;
  ``pki.issue_client(cn)``, ``pki.issue_signer(public_key, dn)``.
* ``home``: a data directory as ``signpeer init`` leaves it, without workers, the
  administrator certificate in ``WSADMINS`` and port 0 (a free port). ``signpeer_home`` is
  the same directory. A suite that needs more in it overrides ``home`` and asks for the
  original: ``def home(home): add things; return home``.
* ``services``: :class:`~signpeer_core.services.Services` opened on ``home`` (closed after
  the test). Add a signer with ``add_signer(services, pki, "Name", implementation="CMSSigner")``.
* ``signpeer``: the command line on ``home``: ``signpeer("getstatus", "brief", "all")`` runs
  it as a subprocess, ``signpeer.in_process(...)`` in this process (faster, and monkeypatches
  apply); both return a :class:`CliResult` ``(code, out, err)``.
* ``start_server``: ``start_server(home, *serve_args, env=None, timeout=60)`` starts
  ``signpeer serve`` (:class:`~signpeer_core.testing.ServerProcess`: ``.url``, ``.port``,
  ``.log()``, ``.stop()``); stopped after the test.
* ``https_client``: ``https_client(server_or_url, cert=None|"admin"|"client"|Credential|(cert, key))``:
  an httpx client trusting the development CA, sending ``X-Keyfactor-Requested-With``;
  closed after the test.
* ``otlp_receiver``: an OTLP/HTTP trace receiver on loopback
  (:class:`~signpeer_core.testing.otlp.OtlpReceiver`); start the server with
  ``env=tracing_env(otlp_receiver)`` and read a request's spans with ``request_spans`` (both in
  :mod:`signpeer_core.testing.otlp`). Skips the test without the ``opentelemetry`` extra.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from signpeer_core.plugins import EXTRA_ENV
from signpeer_core.testing import plugin as test_plugin
from signpeer_core.testing.home import open_services, write_home
from signpeer_core.testing.otlp import otlp_receiver  # noqa: F401 - a fixture of this plugin
from signpeer_core.testing.pki import PKI, Credential, make_pki
from signpeer_core.testing.postgres import TEST_DATABASE_ENV, PostgresServer
from signpeer_core.testing.processes import ServerProcess, client_context, run_signpeer

_saved_env: list[str | None] = []
_session_postgres: list[PostgresServer] = []


def pytest_configure(config: pytest.Config) -> None:
    _saved_env.append(os.environ.get(EXTRA_ENV))
    test_plugin.enable()
    if _xdist_controller(config):
        return  # pytest -n N: the worker processes run the tests, each starts its own server below
    if os.environ.get(TEST_DATABASE_ENV) == "start":
        # The whole suite on PostgreSQL: a server of this session, one schema per data directory.
        server = PostgresServer().start()
        _session_postgres.append(server)
        os.environ[TEST_DATABASE_ENV] = server.create_database("signpeer_tests")
    if os.environ.get(TEST_DATABASE_ENV):
        # One database server for every data directory of the run: one data protection key for
        # all of them (as the nodes of a cluster share one), given as SIGNPEER_KEY.
        os.environ.setdefault("SIGNPEER_KEY", secrets.token_hex(32))


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this is the process that hands tests to pytest-xdist's workers (and runs none)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_unconfigure(config: pytest.Config) -> None:
    while _session_postgres:
        _session_postgres.pop().close()
        os.environ[TEST_DATABASE_ENV] = "start"
    if _saved_env:
        before = _saved_env.pop()
        if before is None:
            os.environ.pop(EXTRA_ENV, None)
        else:
            os.environ[EXTRA_ENV] = before


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server of this test session (``initdb`` + ``pg_ctl`` in a temporary
    directory, a free port on 127.0.0.1); ``postgres.fresh_url()`` gives an empty database."""
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """The test PKI, one per test session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def home(tmp_path: Path, pki: PKI) -> Path:
    """A data directory without workers (see the module docstring)."""
    return write_home(tmp_path / "home", pki)


@pytest.fixture
def signpeer_home(home: Path) -> Path:
    """The same directory as ``home`` (the name the core's tests use)."""
    return home


@pytest.fixture
def services(home: Path) -> Iterator[Any]:
    """Services opened on ``home``, closed after the test."""
    s = open_services(home)
    yield s
    s.close()


class CliResult(NamedTuple):
    """What a ``signpeer`` command did: exit code, standard output, standard error."""

    code: int
    out: str
    err: str


class CliRunner:
    """Runs ``signpeer`` commands on one data directory."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, input: bytes | str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 120) -> CliResult:
        """Run ``signpeer *args`` as a subprocess (the environment of
        :func:`~signpeer_core.testing.server_env` plus ``env``)."""
        data = input.encode() if isinstance(input, str) else input
        proc = run_signpeer(self.home, *args, input=data, timeout=timeout, env=env)
        return CliResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def in_process(self, *args: str, input: str | None = None) -> CliResult:
        """Run ``signpeer --home <home> *args`` in this process (usage errors give exit code 2)."""
        from signpeer_core.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        stdin = sys.stdin
        try:
            if input is not None:
                sys.stdin = io.StringIO(input)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(["--home", str(self.home), *args])
                except SystemExit as exc:  # argparse: --help, usage errors
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdin = stdin
        return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def signpeer(home: Path) -> CliRunner:
    """The ``signpeer`` command line on ``home`` (see :class:`CliRunner`)."""
    return CliRunner(home)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(home, *serve_args, env=None, timeout=60)``: a running ``signpeer serve``,
    stopped after the test."""
    servers: list[ServerProcess] = []

    def start(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> ServerProcess:
        server = ServerProcess(home, tuple(args), env)
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def https_client(pki: PKI) -> Iterator[Callable[..., httpx.Client]]:
    """``https_client(server_or_url, cert=None|"admin"|"client"|Credential|(cert, key))`` -> httpx.Client."""
    clients: list[httpx.Client] = []

    def make(target: ServerProcess | str, cert: str | tuple[str, str] | Credential | None = None,
             **kwargs: Any) -> httpx.Client:
        url = target.url if isinstance(target, ServerProcess) else target
        pair: tuple[str, str] | None
        if cert == "admin":
            pair = pki.admin.pair
        elif cert == "client":
            pair = pki.client.pair
        elif isinstance(cert, Credential):
            pair = cert.pair
        elif isinstance(cert, tuple):
            pair = cert
        else:
            pair = None
        headers = {"X-Keyfactor-Requested-With": "tests"} | kwargs.pop("headers", {})
        client = httpx.Client(base_url=url, verify=client_context(pki.ca_pem, pair), headers=headers,
                              timeout=kwargs.pop("timeout", 30), **kwargs)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


__all__ = ["CliResult", "CliRunner"]
