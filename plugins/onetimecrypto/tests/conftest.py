"""Fixtures of the one-time key tests: a data directory with a soft source token, helpers to
add one-time workers and signers, and the core's server/PKI helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.testing import PASSWORD, PKI, open_services, write_home


@pytest.fixture
def home(tmp_path: Path, pki: PKI) -> Path:
    h = write_home(tmp_path / "home", pki)
    # The local CA of the one-time worker: the development CA itself.
    devpki.write_public(h / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(h / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    return h


@pytest.fixture
def services(home: Path) -> Iterator[Any]:
    from signpeer_onetimecrypto.worker import close_pools

    s = open_services(home)
    yield s
    close_pools()
    s.close()


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
