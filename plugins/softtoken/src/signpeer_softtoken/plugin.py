"""The signpeer hooks of signpeer-softtoken: only registration; the token lives in :mod:`.token`."""

from __future__ import annotations

from signpeer_core.api import CryptoToken, hookimpl


@hookimpl
def signpeer_crypto_token_types() -> list[type[CryptoToken]]:
    from signpeer_softtoken.token import SoftCryptoToken

    return [SoftCryptoToken]
