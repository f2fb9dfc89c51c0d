"""Plugin loading: the plugin-manager factory and the typed registry built from it.

This is the only module that calls ``pm.hook``. Everything else asks the :class:`Registry`
for a token type, worker type, CA connector, CLI command or the routes, by name.

Entry points (group ``signpeer``) are loaded here rather than with
``pm.load_setuptools_entrypoints`` so that a plugin that fails to import stops start-up with
a message naming its distribution and version, instead of a bare traceback.

``SIGNPEER_EXTRA_PLUGINS`` names modules to register as plugins besides the installed entry
points (import names, comma or space separated): for tests and development, e.g. the test
kit's memory token (``signpeer_core.testing.plugin``) or a plugin not packaged yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from signpeer_core import hookspecs
from signpeer_core.audit import declare_secrets, declare_secrets_later
from signpeer_core.errors import ConfigurationError, PluginError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services
    from signpeer_core.storage.migrations import MigrationSource

ENTRY_POINT_GROUP = "signpeer"
DISABLED_ENV = "SIGNPEER_DISABLED_PLUGINS"
EXTRA_ENV = "SIGNPEER_EXTRA_PLUGINS"

#: Plugins that ship inside signpeer-core and register through the same hooks.
BUILTIN_PLUGINS = ("signpeer_core.builtin",)


@dataclass
class PluginInfo:
    """What ``signpeer plugins`` shows about one loaded plugin."""

    name: str
    distribution: str
    version: str
    registers: dict[str, list[str]] = field(default_factory=dict)


def disabled_plugin_names(value: str | None = None) -> set[str]:
    """Names in ``SIGNPEER_DISABLED_PLUGINS`` (comma or space separated)."""
    raw = os.environ.get(DISABLED_ENV, "") if value is None else value
    return {part.strip() for part in raw.replace(",", " ").split() if part.strip()}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which distribution each entry-point plugin came from."""

    def __init__(self) -> None:
        super().__init__("signpeer")
        self.distributions: dict[str, tuple[str, str]] = {}


def _parse_api_version(value: object) -> tuple[int, int] | None:
    try:
        major, minor = str(value).strip().split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def check_api_version(plugin: object, name: str, dist_name: str, dist_version: str) -> None:
    """Refuse a plugin written for a plugin API this core does not provide.

    A plugin states the API it needs in ``SIGNPEER_API_VERSION`` ("major.minor"; missing means
    "1.0"). It loads when the majors are equal and this core's minor is at least the plugin's.
    """
    from signpeer_core import API_VERSION, __version__

    wanted_text = getattr(plugin, "SIGNPEER_API_VERSION", "1.0")
    wanted = _parse_api_version(wanted_text)
    have = _parse_api_version(API_VERSION)
    assert have is not None
    if wanted is None:
        raise PluginError(
            f"plugin '{name}' from {dist_name} {dist_version} states SIGNPEER_API_VERSION = {wanted_text!r}; "
            f"it must be 'major.minor' (this signpeer-core {__version__} provides plugin API {API_VERSION}). "
            f"Fix or uninstall it, or set {DISABLED_ENV}={name} to start without it.")
    if wanted[0] != have[0] or wanted[1] > have[1]:
        if wanted > have:
            advice = "upgrade signpeer-core (pip install -U signpeer-core)"
        else:
            advice = f"upgrade {dist_name} to a release written for plugin API {have[0]}.x"
        raise PluginError(
            f"plugin '{name}' from {dist_name} {dist_version} needs signpeer plugin API {wanted_text}, but this "
            f"signpeer-core {__version__} provides plugin API {API_VERSION}: {advice}, or set "
            f"{DISABLED_ENV}={name} to start without it.")


def extra_plugin_modules(value: str | None = None) -> list[str]:
    """Module names in ``SIGNPEER_EXTRA_PLUGINS`` (comma or space separated), in order."""
    raw = os.environ.get(EXTRA_ENV, "") if value is None else value
    return list(dict.fromkeys(part.strip() for part in raw.replace(",", " ").split() if part.strip()))


def get_plugin_manager(disabled: set[str] | None = None, load_entry_points: bool = True,
                       extra: tuple[tuple[str, object], ...] = ()) -> PluginManager:
    """Create a plugin manager with the built-in plugins, the modules in ``SIGNPEER_EXTRA_PLUGINS``
    and every installed ``signpeer`` entry point (the last two unless ``load_entry_points`` is False).

    ``extra`` registers further ``(name, plugin)`` pairs (tests, embedding applications).
    """
    import importlib

    disabled = disabled_plugin_names() if disabled is None else disabled
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    if load_entry_points:
        for modname in extra_plugin_modules():
            if modname in disabled or pm.has_plugin(modname):
                continue
            try:
                module = importlib.import_module(modname)
            except Exception as exc:  # any import failure must name the culprit
                raise PluginError(f"plugin module '{modname}' named in {EXTRA_ENV} failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc
            pm.register(module, name=modname)
            pm.distributions[modname] = (f"module ({EXTRA_ENV})", "-")
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled or pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist else "unknown distribution"
            dist_version = dist.version if dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure must name the culprit
                raise PluginError(
                    f"plugin '{ep.name}' from {dist_name} {dist_version} failed to load: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or set "
                    f"{DISABLED_ENV}={ep.name} to start without it."
                ) from exc
            check_api_version(plugin, ep.name, dist_name, dist_version)
            pm.register(plugin, name=ep.name)
            pm.distributions[ep.name] = (dist_name, dist_version)
    for name, plugin in extra:
        if name not in disabled:
            check_api_version(plugin, name, "signpeer-core" if name in BUILTIN_PLUGINS else name, "?")
            pm.register(plugin, name=name)
    # Plugins' own hooks (historic: a plugin registered later still declares its hooks).
    pm.hook.signpeer_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    return pm


def _type_names(cls: type, kind: str, owner: str) -> list[str]:
    """The class's own type name and aliases; what it inherits does not count.

    A subclass of a registered class (``class MySigner(PlainSigner)``) must name itself: the
    aliases it inherits (SignServer's class names) stay its parent's.
    """
    own = cls.__dict__
    if "type_name" not in own and any(getattr(base, "type_name", "") for base in cls.__mro__[1:]):
        raise PluginError(
            f"{kind} class {cls.__module__}.{cls.__qualname__} of plugin '{owner}' inherits type_name "
            f"'{getattr(cls, 'type_name', '')}' from its parent; give it a type_name of its own")
    names = [own.get("type_name") or cls.__name__]
    names.extend(own.get("implementation_aliases", ()))
    return names


class TypeTable:
    """Classes of one kind by name and alias, with the plugin that registered each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, type] = {}
        self._owner: dict[str, str] = {}
        self.primary: dict[str, type] = {}

    def add(self, cls: type, owner: str) -> None:
        for i, name in enumerate(_type_names(cls, self.kind, owner)):
            key = name.lower()
            if key in self._by_name and self._by_name[key] is not cls:
                raise PluginError(
                    f"{self.kind} type '{name}' is registered by both plugin '{self._owner[key]}' "
                    f"and plugin '{owner}'; uninstall or disable one of them ({DISABLED_ENV})"
                )
            self._by_name[key] = cls
            self._owner[key] = owner
            if i == 0:
                self.primary[name] = cls

    def get(self, name: str, property_name: str) -> type:
        cls = self._by_name.get(name.strip().lower())
        if cls is None:
            known = ", ".join(sorted(self.primary)) or "none"
            short = name.strip().rsplit(".", 1)[-1]
            origin = f" (SignServer's {short})" if name.strip().lower().startswith("org.signserver.") else ""
            raise ConfigurationError(
                f"unknown {self.kind} type '{name}' in {property_name}{origin}: this type is not available in "
                f"signpeer; known types: {known}. Is the plugin that provides it installed?"
            )
        return cls

    def __contains__(self, name: str) -> bool:
        return name.strip().lower() in self._by_name


def _returned(impl: pluggy.HookImpl, **kwargs: Any) -> list[Any]:
    """What one implementation of a list-returning hook gave (nothing counts as an empty list)."""
    got = impl.function(**kwargs)
    if not got:
        return []
    if not isinstance(got, Iterable):
        raise PluginError(f"plugin '{impl.plugin_name}': {impl.function.__name__}() must return a list, "
                          f"not {type(got).__name__}")
    return list(got)


class Registry:
    """The typed facade over the plugin manager: what every other module uses."""

    def __init__(self, pm: pluggy.PluginManager | None = None, *, load_types: bool = True) -> None:
        """``load_types=False`` (the ``signpeer`` command's) imports the plugins' token, worker,
        CA connector and authorizer classes on the first use of each type table, and all of them
        before the first secret check (:func:`~signpeer_core.audit.declare_secrets_later`),
        instead of now: a command starts without importing the classes it does not use."""
        self.pm = pm if pm is not None else get_plugin_manager()
        self.infos: dict[str, PluginInfo] = {}
        dists: dict[str, tuple[str, str]] = getattr(self.pm, "distributions", {})
        for name, _plugin in self.pm.list_name_plugin():
            if name in BUILTIN_PLUGINS:
                from signpeer_core import __version__

                dist = ("signpeer-core", __version__)
            else:
                dist = dists.get(name, ("unknown", "?"))
            self.infos[name] = PluginInfo(name=name, distribution=dist[0], version=dist[1])
        self._tables: dict[str, TypeTable] = {}
        self._commands: dict[str, type] | None = None
        if load_types:
            self.load_types()
        else:
            declare_secrets_later(self.load_types)

    #: The type tables: hook, table kind, and the label ``signpeer plugins`` shows.
    _TYPE_HOOKS = (("signpeer_crypto_token_types", "crypto token", "crypto tokens"),
                   ("signpeer_worker_types", "worker", "workers"),
                   ("signpeer_ca_connectors", "CA connector", "CA connectors"),
                   ("signpeer_authorizer_types", "authorizer", "authorizers"))

    def load_types(self) -> None:
        """Collect every type table now (each once; a failure is raised again on the next use)."""
        for hook, _, _ in self._TYPE_HOOKS:
            self._table(hook)

    def _table(self, hook: str) -> TypeTable:
        table = self._tables.get(hook)
        if table is None:
            kind, label = next((k, lab) for h, k, lab in self._TYPE_HOOKS if h == hook)
            for info in self.infos.values():  # a failed earlier attempt may have listed some
                info.registers.pop(label, None)
            table = TypeTable(kind)
            self._collect(getattr(self.pm.hook, hook), table, label)
            self._tables[hook] = table
        return table

    @property
    def token_types(self) -> TypeTable:
        return self._table("signpeer_crypto_token_types")

    @property
    def worker_types(self) -> TypeTable:
        return self._table("signpeer_worker_types")

    @property
    def ca_connectors(self) -> TypeTable:
        return self._table("signpeer_ca_connectors")

    @property
    def authorizer_types(self) -> TypeTable:
        return self._table("signpeer_authorizer_types")

    def _collect(self, hook: Any, table: TypeTable, label: str) -> None:
        for impl in hook.get_hookimpls():
            owner = impl.plugin_name
            for cls in impl.function() or []:
                table.add(cls, owner)
                declare_secrets(doc.name for doc in getattr(cls, "properties", ()) if doc.secret)
                self.infos[owner].registers.setdefault(label, []).append(getattr(cls, "type_name", cls.__name__))

    def cli_commands(self) -> dict[str, type]:
        """Sub-command classes by name; a name claimed twice is an error."""
        if self._commands is None:
            commands: dict[str, type] = {}
            owners: dict[str, str] = {}
            for impl in self.pm.hook.signpeer_cli_commands.get_hookimpls():
                for cls in _returned(impl):
                    if cls.name in commands:
                        raise PluginError(
                            f"command '{cls.name}' is registered by both plugin '{owners[cls.name]}' "
                            f"and plugin '{impl.plugin_name}'"
                        )
                    commands[cls.name] = cls
                    owners[cls.name] = impl.plugin_name
                    self.infos[impl.plugin_name].registers.setdefault("commands", []).append(cls.name)
            self._commands = commands
        return self._commands

    def routes(self, services: Services) -> list[BaseRoute]:
        """Routes of every plugin, in registration order: the built-in REST API first, so the
        signing route is the first one Starlette tries."""
        routes: list[BaseRoute] = []
        for impl in self.pm.hook.signpeer_routes.get_hookimpls():
            got: list[BaseRoute] = _returned(impl, services=services)
            if got:
                self.infos[impl.plugin_name].registers.setdefault("routes", []).extend(
                    getattr(r, "path", repr(r)) for r in got
                )
            routes.extend(got)
        return routes

    def has_hook(self, name: str) -> bool:
        """True when some loaded plugin declared the hook ``name`` (see ``signpeer_add_hookspecs``)."""
        caller = getattr(self.pm.hook, name, None)
        return caller is not None and caller.spec is not None

    def collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Call the hook ``name`` (declared by a plugin) and join the lists its implementations return.

        Returns ``[]`` when no loaded plugin declared the hook, so a plugin can offer an
        extension point that other plugins may or may not fill.
        """
        if not self.has_hook(name):
            return []
        out: list[Any] = []
        for got in getattr(self.pm.hook, name)(**kwargs):
            out.extend(got or [])
        return out

    def migration_sources(self) -> list[MigrationSource]:
        """Every plugin's own tables (``signpeer_migrations``), in registration order."""
        sources: list[MigrationSource] = []
        for impl in self.pm.hook.signpeer_migrations.get_hookimpls():
            got: list[MigrationSource] = _returned(impl)
            if got:
                self.infos[impl.plugin_name].registers.setdefault("tables", []).extend(s.owner for s in got)
            sources.extend(got)
        return sources

    def plugin_modules(self) -> list[ModuleType]:
        return [p for p in self.pm.get_plugins() if isinstance(p, ModuleType)]
