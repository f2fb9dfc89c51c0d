"""Fixtures of the one-time key tests: a data directory with the one-time worker's CA, a soft
source token, and a helper to add one-time workers and signers (on the shared fixtures of
:mod:`signpeer_core.testing.fixtures`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.testing import PASSWORD, PKI


@pytest.fixture
def home(home: Path, pki: PKI) -> Path:
    """The shared data directory plus the local CA of the one-time worker: the development CA itself."""
    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    return home


@pytest.fixture
def services(services: Any) -> Iterator[Any]:
    """The shared ``services``; the one-time key pools are closed before them."""
    from signpeer_onetimecrypto.worker import close_pools

    yield services
    close_pools()


SOURCE = {"NAME": "SoftSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
          "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
          "KEYSTOREPASSWORD": PASSWORD}


def _configure(services: Any, onetime: dict[str, str] | None = None, signer: dict[str, str] | None = None,
              source: dict[str, str] | None = None) -> None:
    """Workers 1 (source token), 2 (OneTimeCryptoWorker 'OneTime', local CA) and 3 (CMSSigner 'Signer')."""
    store = services.store
    store.update_worker(1, source or SOURCE)
    props = {"NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "SoftSource",
             "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector",
             "CACERTIFICATE_FILE": "onetime-ca.pem", "CAKEY_FILE": "onetime-ca-key.pem",
             "CERTSIGNATUREALGORITHM": "SHA256withECDSA",
             "SUBJECTDN_PATTERN": "CN=${username},UID=${transactionId},O=signpeer tests,C=SE"}
    props.update(onetime or {})
    store.update_worker(2, {k: v for k, v in props.items() if v is not None})
    sprops = {"NAME": "Signer", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner", "CRYPTOTOKEN": "OneTime"}
    sprops.update(signer or {})
    store.update_worker(3, sprops)
    services.runtime.load()


@pytest.fixture
def configure() -> Callable[..., None]:
    """``configure(services, onetime_props, signer_props, source_props)``: see :func:`_configure`."""
    return _configure
