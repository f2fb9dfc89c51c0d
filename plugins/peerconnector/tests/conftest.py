"""Fixtures for the peer connector tests: a PKI, a data directory with signers, a real server.

Built on :mod:`signpeer_core.testing` (the same helpers as the core's ``tests/conftest.py``):
``signpeer serve`` runs as a subprocess with TLS on loopback, and the tests talk to it as a CA
would, with their own client certificate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.testing import PKI, add_signer, open_services, run_signpeer, write_home


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


@pytest.fixture
def home(tmp_path: Path, pki: PKI) -> Path:
    return write_home(tmp_path / "home", pki)


@pytest.fixture
def services(home: Path) -> Iterator[Any]:
    s = open_services(home)
    yield s
    s.close()



@pytest.fixture
def signpeer(home: Path) -> Any:
    """Run a ``signpeer`` command on the data directory; returns (exit code, stdout, stderr)."""

    def run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
        proc = run_signpeer(home, *args, input=input)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    return run


__all__ = ["add_signer"]
