"""The signpeer plugin of the test kit: registers :class:`MemoryCryptoToken`.

Not an entry point (an installed server must never offer a token that keeps keys unencrypted):
it is registered by naming it in ``SIGNPEER_EXTRA_PLUGINS`` (:func:`enable`), which the pytest
plugin (:mod:`signpeer_core.testing.fixtures`) does for the test process, and
:func:`~signpeer_core.testing.open_services`, :func:`~signpeer_core.testing.write_home` and
:func:`~signpeer_core.testing.server_env` (every ``signpeer`` subprocess of the test kit) do
too, so the helpers also work outside pytest (``bench/``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from signpeer_core import hookimpl
from signpeer_core.plugins import EXTRA_ENV, extra_plugin_modules
from signpeer_core.tokens import CryptoToken

#: The module name to put in ``SIGNPEER_EXTRA_PLUGINS``.
MODULE = __name__


def enable(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add this module to ``SIGNPEER_EXTRA_PLUGINS`` in ``environ`` (default: this process's,
    so every plugin manager made afterwards, here or in a subprocess inheriting it, has it)."""
    modules = extra_plugin_modules(environ.get(EXTRA_ENV, ""))
    if MODULE not in modules:
        environ[EXTRA_ENV] = " ".join([*modules, MODULE])


@hookimpl
def signpeer_crypto_token_types() -> list[type[CryptoToken]]:
    from signpeer_core.testing.memorytoken import MemoryCryptoToken

    return [MemoryCryptoToken]
