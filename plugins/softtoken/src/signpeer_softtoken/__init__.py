"""signpeer-softtoken: software keys in PKCS#12 keystores (files, or the database for INTERNAL).

Registers :class:`SoftCryptoToken` (also known by SignServer's name
``org.signserver.server.cryptotokens.KeystoreCryptoToken``) through :mod:`signpeer_softtoken.plugin`.
"""

from __future__ import annotations

from signpeer_softtoken.token import SoftCryptoToken

__all__ = ["SoftCryptoToken"]
