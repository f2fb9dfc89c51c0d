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
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from signpeer_core import hookspecs
from signpeer_core.errors import ConfigurationError, PluginError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from signpeer_core.services import Services

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


def extra_plugin_modules(value: str | None = None) -> list[str]:
    """Module names in ``SIGNPEER_EXTRA_PLUGINS`` (comma or space separated), in order."""
    raw = os.environ.get(EXTRA_ENV, "") if value is None else value
    return list(dict.fromkeys(part.strip() for part in raw.replace(",", " ").split() if part.strip()))


def get_plugin_manager(disabled: set[str] | None = None, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Create a plugin manager with the built-in plugins, the modules in ``SIGNPEER_EXTRA_PLUGINS``
    and every installed ``signpeer`` entry point (the last two unless ``load_entry_points`` is False)."""
    import importlib

    disabled = disabled_plugin_names() if disabled is None else disabled
    pm = pluggy.PluginManager("signpeer")
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
            pm._signpeer_dists = getattr(pm, "_signpeer_dists", {})  # type: ignore[attr-defined]
            pm._signpeer_dists[modname] = (f"module ({EXTRA_ENV})", "-")  # type: ignore[attr-defined]
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
            pm.register(plugin, name=ep.name)
            pm._signpeer_dists = getattr(pm, "_signpeer_dists", {})  # type: ignore[attr-defined]
            pm._signpeer_dists[ep.name] = (dist_name, dist_version)  # type: ignore[attr-defined]
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    return pm


def _type_names(cls: type) -> list[str]:
    names = [getattr(cls, "type_name", cls.__name__)]
    names.extend(getattr(cls, "implementation_aliases", ()))
    return names


class TypeTable:
    """Classes of one kind by name and alias, with the plugin that registered each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, type] = {}
        self._owner: dict[str, str] = {}
        self.primary: dict[str, type] = {}

    def add(self, cls: type, owner: str) -> None:
        for i, name in enumerate(_type_names(cls)):
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
            raise ConfigurationError(
                f"unknown {self.kind} type '{name}' in {property_name}; known types: {known}. "
                f"Is the plugin that provides it installed?"
            )
        return cls

    def __contains__(self, name: str) -> bool:
        return name.strip().lower() in self._by_name


class Registry:
    """The typed facade over the plugin manager: what every other module uses."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()
        self.token_types = TypeTable("crypto token")
        self.worker_types = TypeTable("worker")
        self.ca_connectors = TypeTable("CA connector")
        self.infos: dict[str, PluginInfo] = {}
        dists: dict[str, tuple[str, str]] = getattr(self.pm, "_signpeer_dists", {})
        for name, plugin in self.pm.list_name_plugin():
            if name in BUILTIN_PLUGINS:
                from signpeer_core import __version__

                dist = ("signpeer-core", __version__)
            else:
                dist = dists.get(name, ("unknown", "?"))
            self.infos[name] = PluginInfo(name=name, distribution=dist[0], version=dist[1])
        self._collect(self.pm.hook.signpeer_crypto_token_types, self.token_types, "crypto tokens")
        self._collect(self.pm.hook.signpeer_worker_types, self.worker_types, "workers")
        self._collect(self.pm.hook.signpeer_ca_connectors, self.ca_connectors, "CA connectors")
        self._commands: dict[str, type] | None = None

    def _collect(self, hook: Any, table: TypeTable, label: str) -> None:
        for impl in hook.get_hookimpls():
            owner = impl.plugin_name
            for cls in impl.function() or []:
                table.add(cls, owner)
                self.infos[owner].registers.setdefault(label, []).append(getattr(cls, "type_name", cls.__name__))

    def cli_commands(self) -> dict[str, type]:
        """Sub-command classes by name; a name claimed twice is an error."""
        if self._commands is None:
            commands: dict[str, type] = {}
            owners: dict[str, str] = {}
            for impl in self.pm.hook.signpeer_cli_commands.get_hookimpls():
                for cls in impl.function() or []:
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
            got = impl.function(services=services) or []
            if got:
                self.infos[impl.plugin_name].registers.setdefault("routes", []).extend(
                    getattr(r, "path", repr(r)) for r in got
                )
            routes.extend(got)
        return routes

    def plugin_modules(self) -> list[ModuleType]:
        return [p for p in self.pm.get_plugins() if isinstance(p, ModuleType)]
