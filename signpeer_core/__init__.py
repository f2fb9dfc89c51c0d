"""signpeer core: workers, crypto tokens, configuration, the REST app and the command line.

Plugins import :data:`hookimpl` from here to implement the hooks in :mod:`signpeer_core.hookspecs`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

API_VERSION = "1.5"
"""The plugin API's version (``signpeer_core.api``, the hooks): a minor adds, a major breaks.

A plugin module sets ``SIGNPEER_API_VERSION = "1.0"`` to the version it was written for; it is
refused at load when this core provides another major or an older minor."""

hookimpl = pluggy.HookimplMarker("signpeer")
"""Marker for plugin hook implementations: ``@hookimpl def signpeer_worker_types(): ...``."""

__all__ = ["API_VERSION", "__version__", "hookimpl"]
