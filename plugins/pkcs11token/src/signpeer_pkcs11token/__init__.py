"""signpeer-pkcs11token: keys in PKCS#11 HSMs for signpeer (SignServer's PKCS11CryptoToken).

The token type lives in :mod:`signpeer_pkcs11token.token`; keys that forward ``sign()`` to the
device in :mod:`.keys`; the process-wide module registry and call lock in :mod:`.module`;
``PlainSigner``'s inline hot path in :mod:`.prepared`.
"""

__version__ = "0.1.0"
