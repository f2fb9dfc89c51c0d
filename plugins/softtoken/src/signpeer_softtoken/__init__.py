"""signpeer-softtoken: software keys in PKCS#12 keystores (files, or the database for INTERNAL).

Registers :class:`SoftCryptoToken` (also known by SignServer's name
``org.signserver.server.cryptotokens.KeystoreCryptoToken``) through :mod:`signpeer_softtoken.plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signpeer_softtoken.token import SoftCryptoToken

__all__ = ["SoftCryptoToken"]


def __getattr__(name: str) -> Any:
    """The token class is imported on first use: loading the plugin (every ``signpeer`` command
    does) need not import the keystore code."""
    if name == "SoftCryptoToken":
        from signpeer_softtoken.token import SoftCryptoToken

        return SoftCryptoToken
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
