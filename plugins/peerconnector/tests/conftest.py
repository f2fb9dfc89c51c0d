"""Fixtures for the peer connector tests: a PKI, a data directory with signers, a real server.

Built on the shared fixtures of :mod:`signpeer_core.testing.fixtures` (``pki``, ``home``,
``services``, ``signpeer``, ``start_server``): ``signpeer serve`` runs as a subprocess with TLS
on loopback, and the tests talk to it as a CA would, with their own client certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.testing import PKI


@pytest.fixture
def peer(pki: PKI) -> Any:
    """The CA peer's TLS client credential (issued by the server's client CA)."""
    return pki.issue_client("EJBCA Peer Connector", dn_suffix=", OU=Peers, O=signpeer tests")


@pytest.fixture
def issuing_ca(tmp_path: Path) -> tuple[Path, Path, Any, Any]:
    """The connector's issuing CA (separate from the TLS CA): (cert.pem, key.pem, key, cert)."""
    key, cert = devpki.make_ca("CN=Signer Issuing CA, O=signpeer tests, C=SE")
    cert_pem, key_pem = tmp_path / "issuing-ca.pem", tmp_path / "issuing-ca-key.pem"
    devpki.write_public(cert_pem, devpki.cert_pem(cert))
    devpki.write_private(key_pem, devpki.key_pem(key))
    return cert_pem, key_pem, key, cert

