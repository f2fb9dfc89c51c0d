"""signpeer time-stamp authority: SignServer's ``TimeStampSigner`` (RFC 3161).

* :mod:`.signer` — the ``TimeStampSigner`` worker: its properties, status and signing;
* :mod:`.protocol` — RFC 3161 requests checked against the worker's policy, tokens and replies;
* :mod:`.serials` — serial numbers that never repeat across processes and nodes;
* :mod:`.routes` — the HTTP transport ``/signserver/tsa?workerName=...`` (RFC 3161 §3.4).

Signers that make CMS time-stamp their signatures through the core's
:mod:`signpeer_core.timestamping` seam (``TSA_WORKER`` names a worker of this type).
"""

__version__ = "0.1.0"
