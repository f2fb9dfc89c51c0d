"""signpeer core: workers, crypto tokens, configuration, the REST app and the command line.

Plugins import :data:`hookimpl` from here to implement the hooks in :mod:`signpeer_core.hookspecs`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("signpeer")
"""Marker for plugin hook implementations: ``@hookimpl def signpeer_worker_types(): ...``."""

__all__ = ["__version__", "hookimpl"]
