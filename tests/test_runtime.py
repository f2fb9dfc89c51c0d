"""The worker runtime: loading from the store, token sharing through CRYPTOTOKEN, and
configuration problems that make one worker OFFLINE without stopping the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from signpeer_core.errors import UnknownWorkerError
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.services import Services
from signpeer_core.settings import load_settings


@pytest.fixture()
def services(tmp_path: Path) -> Services:
    svc = Services.open(load_settings(tmp_path), registry=Registry(get_plugin_manager(load_entry_points=False)),
                        load=False)
    yield svc
    svc.close()


def test_lookup_by_id_and_name(services: Services) -> None:
    services.store.update_worker(7, {"NAME": "MySigner", "IMPLEMENTATION_CLASS": "PlainSigner"})
    services.runtime.load()
    assert services.runtime.get("7").name == "MySigner"
    assert services.runtime.get("mysigner").id == 7
    with pytest.raises(UnknownWorkerError, match="no worker 'Nope'"):
        services.runtime.get("Nope")


def test_problems_make_only_that_worker_offline(services: Services) -> None:
    store = services.store
    store.update_worker(1, {"NAME": "NoImpl"})
    store.update_worker(2, {"NAME": "BadImpl", "IMPLEMENTATION_CLASS": "org.example.Nope"})
    store.update_worker(3, {"NAME": "BadRef", "IMPLEMENTATION_CLASS": "CMSSigner", "CRYPTOTOKEN": "Missing",
                            "DEFAULTKEY": "k"})
    store.update_worker(4, {"NAME": "BadToken", "IMPLEMENTATION_CLASS": "CryptoWorker", "TYPE": "CRYPTO_WORKER",
                            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "NoSuchToken"})
    store.update_worker(5, {"NAME": "UsesBadToken", "IMPLEMENTATION_CLASS": "PlainSigner", "CRYPTOTOKEN": "BadToken",
                            "DEFAULTKEY": "k"})
    store.update_worker(6, {"NAME": "BadType", "IMPLEMENTATION_CLASS": "PlainSigner", "TYPE": "SIGNER"})
    store.update_worker(8, {"NAME": "BadBool", "IMPLEMENTATION_CLASS": "CMSSigner", "DETACHEDSIGNATURE": "maybe"})
    services.runtime.load()
    reasons = {w.name: " ".join(w.status().reasons) for w in services.runtime.workers()}
    assert "IMPLEMENTATION_CLASS is not set" in reasons["NoImpl"]
    assert "unknown worker type 'org.example.Nope'" in reasons["BadImpl"]
    assert "no worker with that name" in reasons["BadRef"]
    assert "unknown crypto token type 'NoSuchToken'" in reasons["BadToken"]
    assert "'BadToken' named in CRYPTOTOKEN is not usable" in reasons["UsesBadToken"]
    assert "TYPE must be PROCESSABLE or CRYPTO_WORKER" in reasons["BadType"]
    assert "DETACHEDSIGNATURE must be true or false" in reasons["BadBool"]
    assert all(not w.status().active for w in services.runtime.workers())
