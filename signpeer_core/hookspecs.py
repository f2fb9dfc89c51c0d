"""Every hook a signpeer plugin can implement.

All hooks but :func:`signpeer_add_hookspecs` are *registration* hooks: they run once when a process starts (or when the
command line builds its parser) and return classes or objects. Per-request work is done by
methods on what they return, never by a hook call, so signing requests pay no dispatch cost.

Each hook returns a list; pluggy collects the lists of all plugins. A plugin implements any
subset. ``docs/plugin-hooks.md`` has a section for every hook below (a test checks that).

The hooks are versioned with the plugin API (:data:`signpeer_core.api.API_VERSION`): a plugin
states the version it was written for in ``SIGNPEER_API_VERSION`` and is refused, with a
message saying what to upgrade, when this core provides an older minor or another major.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.auth import Authorizer
    from signpeer_core.caconnector import CAConnector
    from signpeer_core.cli.base import Command
    from signpeer_core.metrics import Collector
    from signpeer_core.services import Services
    from signpeer_core.storage.migrations import MigrationSource
    from signpeer_core.tokens import CryptoToken
    from signpeer_core.workers import Worker

hookspec = pluggy.HookspecMarker("signpeer")


@hookspec(historic=True)
def signpeer_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Declare hooks of this plugin's own, for other plugins to implement.

    Called once for every plugin, also for plugins registered later (a historic hook, as
    pytest's ``pytest_addhooks``). Call ``pluginmanager.add_hookspecs(module)`` with a module of
    functions marked ``@hookspec`` (:data:`signpeer_core.api.hookspec`). Implementations of
    such a hook in other plugins mark themselves ``@hookimpl(optionalhook=True)`` so that they
    load when the declaring plugin is not installed; call the hook with
    ``services.registry.collect(name, ...)``.
    """


@hookspec
def signpeer_crypto_token_types() -> list[type[CryptoToken]]:
    """Return the crypto token classes this plugin provides.

    Called once per process when the type registry is built. Each class subclasses
    :class:`signpeer_core.tokens.CryptoToken` and names itself with ``type_name`` (what
    ``CRYPTOTOKEN_IMPLEMENTATION_CLASS`` may say) and optionally ``implementation_aliases``
    (e.g. SignServer's Java class name). Two plugins claiming the same name stop start-up.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_worker_types() -> list[type[Worker]]:
    """Return the worker classes this plugin provides (signers, crypto workers, ...).

    Called once per process when the type registry is built. Each class subclasses
    :class:`signpeer_core.workers.Worker`, names itself with ``type_name`` (what
    ``IMPLEMENTATION_CLASS`` may say) and optionally ``implementation_aliases``.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_cli_commands() -> list[type[Command]]:
    """Return the ``signpeer`` sub-commands this plugin adds.

    Called once when the command line builds its parser. Each class subclasses
    :class:`signpeer_core.cli.base.Command`: ``name``, ``help``, ``configure(parser)`` and
    ``run(args, ctx) -> int`` (the exit status). A name used twice stops the command line.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_routes(services: Services) -> list[BaseRoute]:
    """Return Starlette routes (HTTP transports) to mount in the server's app.

    Called once per server process when the app is built, after the configuration is
    loaded. ``services`` gives the store, the settings and the live worker runtime. Routes
    must not touch the database on a signing hot path.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_ca_connectors() -> list[type[CAConnector]]:
    """Return CA connector classes (used by one-time key workers to obtain certificates).

    Called once per process when the type registry is built. Each class subclasses
    :class:`signpeer_core.caconnector.CAConnector`, names itself with ``type_name`` and
    optionally ``implementation_aliases`` (SignServer's Java class names).
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_authorizer_types() -> list[type[Authorizer]]:
    """Return worker authorizer classes (what a worker's ``AUTHTYPE`` may name besides the
    built-in NOAUTH, CLIENTCERT and USERNAME).

    Called once per process when the type registry is built. Each class subclasses
    :class:`signpeer_core.auth.Authorizer` (for bearer tokens :class:`~signpeer_core.auth.BearerAuthorizer`),
    names itself with ``type_name`` and optionally ``implementation_aliases`` (SignServer's class
    names), and is built with ``(config, services)`` when a signer loads; a
    :class:`~signpeer_core.errors.ConfigurationError` from it makes the signer OFFLINE.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_migrations() -> list[MigrationSource]:
    """Return the plugin's own database tables: one :class:`MigrationSource` per owner.

    Called once per process when the store opens (before anything reads the database). Each
    source names its owner (its version table is ``alembic_version_<owner>``), the directory of
    its Alembic revision scripts (package data) and its ``Table`` metadata. The store upgrades
    every owner to its newest revision, the core's first; the plugin then reads and writes its
    tables through ``services.store.database``. Two plugins naming the same owner stop start-up.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations


@hookspec
def signpeer_metrics(services: Services) -> list[Collector]:
    """Return collectors of the plugin's state metrics for ``/metrics``.

    Called once per server process, at the first scrape. A collector is any object with a
    ``collect()`` method returning metric families (``GaugeMetricFamily``,
    ``CounterMetricFamily`` from :mod:`signpeer_core.api`); it runs at every scrape, in a
    thread (it may read the database). Event metrics (counters, histograms) need no hook: make
    them with ``metrics_counter``/``metrics_histogram``/``metrics_gauge``. Label values must come
    from bounded sets (worker names, states), never from what a client sends.
    """
    raise NotImplementedError  # a specification: pluggy calls the implementations
