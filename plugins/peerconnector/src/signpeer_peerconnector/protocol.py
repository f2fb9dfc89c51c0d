"""Names and constants of the peer protocol, shared by the server routes and the CA-side client.

The protocol version is part of every path (``/signserver/peer/v1/...``). A path with another
version is answered with 400 and ``supportedVersions`` so a newer CA knows at once what it is
talking to, instead of meeting confusing 404s.
"""

from __future__ import annotations

#: Prefix every peer path lives under (SignServer's ``/signserver/peer/v1``).
PEER_ROOT = "/signserver/peer"
VERSION = "v1"
SUPPORTED_VERSIONS = ("v1",)
#: Key bindings per page of ``GET /keybindings`` (the default, and the most a ``limit`` may ask).
PAGE_SIZE = 1000
BASE_PATH = f"{PEER_ROOT}/{VERSION}"
PROTOCOL_NAME = "signpeer-peer"

#: Key binding status values (EJBCA's InternalKeyBindingStatus subset SignServer exposes).
STATUS_ACTIVE = "ACTIVE"
STATUS_DISABLED = "DISABLED"
#: Operational status (EJBCA's InternalKeyBindingOperationalStatus).
ONLINE = "ONLINE"
OFFLINE = "OFFLINE"

#: Content types accepted/returned besides JSON, so curl and openssl need no JSON tooling.
PEM_CHAIN_TYPE = "application/pem-certificate-chain"
PKCS10_PEM_TYPE = "application/pkcs10"

#: Wording every refusal carries (EJBCA shows "Unable to connect to peer. Unauthorized.").
UNAUTHORIZED = "Unauthorized"

# Worker properties the peer module reads or writes (documented in README.md).
PEERS_VISIBLE = "PEERS_VISIBLE"
PEERS_ISSUED = "PEERS_ISSUED"
PEERS_KEEPCHAIN = "PEERS_KEEPCHAIN"
# Global properties.
PEERS_INCOMING_ENABLED = "PEERS_INCOMING_ENABLED"
WSPEERS = "WSPEERS"
