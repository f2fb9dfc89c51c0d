"""signpeer Peer Systems: SignServer's peer endpoint and its CA-side counterpart.

* Server side (inside ``signpeer serve``): the versioned JSON-over-mutual-TLS protocol under
  ``/signserver/peer/v1`` (:mod:`.routes`), peer authorization exactly as SignServer does it
  (:mod:`.authz`), the incoming-connections registry (:mod:`.incoming`), workers seen as key
  bindings (:mod:`.bindings`) and CA-driven renewal (:mod:`.renewal`).
* CA side: :class:`signpeer_peerconnector.client.PeerClient` and ``signpeer connector`` — what
  EJBCA is in SignServer's world — issuing with a configured CA (:mod:`signpeer_core.issuing`).
* Administration: ``signpeer wspeersystems`` and ``signpeer peers`` (:mod:`.cli`).

The protocol is described in ``docs/peer-protocol.md`` and served as OpenAPI at
``/signserver/peer/v1/openapi.json``.
"""

from __future__ import annotations

__version__ = "0.1.0"
