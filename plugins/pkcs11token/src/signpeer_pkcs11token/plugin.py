"""Entry point of signpeer-pkcs11token: registers :class:`Pkcs11CryptoToken`."""

from __future__ import annotations

from signpeer_core.api import hookimpl


@hookimpl
def signpeer_crypto_token_types() -> list[type]:
    from signpeer_pkcs11token.token import Pkcs11CryptoToken

    return [Pkcs11CryptoToken]
