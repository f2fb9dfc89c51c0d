"""The test kit of signpeer and its plugins: a development PKI, data directories, a memory
crypto token, ``signpeer`` subprocesses, waiting on conditions, and pytest fixtures.

Importable by any test (``from signpeer_core.testing import add_signer, wait_until``); not
used by the server itself. The fixtures wrapping these helpers (``pki``, ``home``,
``services``, ``signpeer``, ``start_server``, ``https_client``) are a pytest plugin,
:mod:`signpeer_core.testing.fixtures`, which pytest loads by itself wherever signpeer-core is
installed (entry point ``pytest11``); ``docs/writing-plugins.md`` ("Testing your plugin")
shows them in use.

* :mod:`.pki` -- :func:`make_pki`: a P-256 development CA (devpki) with a TLS server
  certificate for localhost/127.0.0.1, an administrator client certificate (``admin``) and a
  second client certificate (``client``), as PEM files; ``pki.issue_client(cn)`` and
  ``pki.issue_signer(public_key, dn)`` make more.
* :mod:`.home` -- :func:`write_home`: a data directory with ``signpeer.toml`` (port 0 = any
  free port, fast reload polling), ``tls/`` laid out as ``signpeer init`` lays it out, a
  database, and the administrator in ``WSADMINS``; :func:`open_services`; :func:`open_store_of`
  (its store alone, SQLite or PostgreSQL); :func:`add_signer`:
  a worker with a :class:`MemoryCryptoToken`, a key and a certificate from the development CA.
* :mod:`.memorytoken` -- :class:`MemoryCryptoToken`, registered by :mod:`.plugin` through
  ``SIGNPEER_EXTRA_PLUGINS`` (so the core's tests need no token plugin).
* :mod:`.processes` -- :func:`run_signpeer`, :class:`ServerProcess` (``signpeer serve`` as a
  subprocess on a free port, started when it answers HTTPS), :func:`client_context`.
* :mod:`.wait` -- :func:`wait_until`: poll a condition, with a timeout only as a safety net.
* :mod:`.statements` -- :func:`counted`: the SQL statements an operation runs (SQLAlchemy's
  engine events; SQLite and PostgreSQL), sorted into reads, writes and write transactions.
* :mod:`.softhsm` -- :func:`session_softhsm`: one SoftHSM2 configuration per test process.
* :mod:`.directapps` -- the app as it serves beside one sending every request through the Router,
  driven in process, and the check that both answer the same (the direct routes' promise).
* :mod:`.distribution` -- run a plugin package's tests without installing it (its entry points
  from a ``.dist-info`` on ``PYTHONPATH``): the example plugin of the guide, ``signpeer newplugin``.
"""

from __future__ import annotations

from signpeer_core.testing.home import (
    MEMORY_TOKEN,
    PASSWORD,
    add_signer,
    open_services,
    open_store_of,
    write_home,
)
from signpeer_core.testing.memorytoken import MemoryCryptoToken
from signpeer_core.testing.pki import PKI, Credential, make_pki
from signpeer_core.testing.plugin import MODULE as TEST_PLUGIN_MODULE
from signpeer_core.testing.processes import (
    ServerProcess,
    client_context,
    run_signpeer,
    server_env,
    signpeer_cmd,
)
from signpeer_core.testing.softhsm import SOFTHSM_MODULE, SOFTHSM_TOKENS, session_softhsm
from signpeer_core.testing.statements import Statements, counted
from signpeer_core.testing.wait import wait_until

__all__ = [
    "MEMORY_TOKEN",
    "PASSWORD",
    "PKI",
    "SOFTHSM_MODULE",
    "SOFTHSM_TOKENS",
    "TEST_PLUGIN_MODULE",
    "Credential",
    "MemoryCryptoToken",
    "ServerProcess",
    "Statements",
    "add_signer",
    "client_context",
    "counted",
    "make_pki",
    "open_services",
    "open_store_of",
    "run_signpeer",
    "server_env",
    "session_softhsm",
    "signpeer_cmd",
    "wait_until",
    "write_home",
]
