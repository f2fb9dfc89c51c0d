"""signpeer one-time keys: every signature by a brand-new key pair and a certificate for it alone.

* :mod:`.worker` — ``OneTimeCryptoWorker`` and the one-time token signers get from it;
* :mod:`.keysource` — where one-time keys are made and destroyed (software, PKCS#11 session
  objects, token objects), and the optional pre-generation pool;
* :mod:`.templates` — ``${username}``-style templates, subject alternative names, validity;
* :mod:`.connectors` — the CA connector interface, ``SelfSignedCAConnector``, ``LocalCAConnector``;
* :mod:`.ra` — the peers RA connector (requests queued in the database for a CA peer);
* :mod:`.routes` / :mod:`.raclient` — both ends of the RA part of the peer protocol;
* :mod:`.commands` — ``signpeer ra requests|purge|serve`` (``serve`` is also ``signpeer connector serve-ra``).
"""

__version__ = "0.1.0"
