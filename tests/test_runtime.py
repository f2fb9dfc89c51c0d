"""The worker runtime: loading from the store, token sharing through CRYPTOTOKEN, and
configuration problems that make one worker OFFLINE without stopping the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from signpeer_core.errors import UnknownWorkerError
from signpeer_core.identifiers import worker_id_of
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


def _looked_up_the_long_way(runtime: Any, id_or_name: str | int) -> Any:
    """Runtime.get as it read every name before its short way for names (the reference)."""
    key = str(id_or_name).strip()
    wid = worker_id_of(key)
    return runtime.by_id.get(wid) if wid is not None else runtime.by_name.get(key.lower())


def test_the_short_way_for_names_finds_what_the_long_way_finds(services: Services) -> None:
    """A name is looked up without reading it as an id first only where that cannot differ: names
    that are digits (an id first), names with blanks around (stripped), other cases and scripts."""
    names = {7: "MySigner", 8: "12", 12: "Twelve", 9: " Padded ", 10: "Ünïcode", 11: "²"}
    for wid, name in names.items():
        services.store.update_worker(wid, {"NAME": name, "IMPLEMENTATION_CLASS": "PlainSigner"})
    services.runtime.load()
    runtime = services.runtime
    asked = ["MySigner", "mysigner", "MYSIGNER", " mysigner", "mysigner ", "12", " 12", "012", "8", "７", "Twelve",
             "twelve", " Padded ", "padded", " padded ", "ünïcode", "ÜNÏCODE", "²", "Nope", "", 7, 12]
    for key in asked:
        expected = _looked_up_the_long_way(runtime, key)
        if expected is None:
            with pytest.raises(UnknownWorkerError):
                runtime.get(key)
        else:
            assert runtime.get(key) is expected, key


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


def test_certificate_for_another_key_never_signs(tmp_path: Path) -> None:
    """DEFAULTKEY moved to a new key while SIGNERCERTCHAIN still holds the old key's certificate
    (a manual renewal half done): the worker is OFFLINE and refuses, instead of returning
    signatures that cannot verify."""
    import asyncio

    from signpeer_core import devpki
    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.errors import WorkerOfflineError
    from signpeer_core.testing import MEMORY_TOKEN
    from signpeer_core.workers import SignRequest

    svc = Services.open(load_settings(tmp_path), load=False)
    try:
        svc.store.update_worker(1, {"NAME": "Tok", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": "secret123"})
        svc.store.update_worker(2, {"NAME": "Plain", "IMPLEMENTATION_CLASS": "PlainSigner", "CRYPTOTOKEN": "Tok",
                                    "DEFAULTKEY": "k1"})
        svc.runtime.load()
        token = svc.runtime.get("Tok").token
        token.generate_key("k1", "ECDSA", "P-256")
        token.generate_key("k2", "ECDSA", "P-256")
        ca_key, ca = devpki.make_ca("CN=CA")
        cert = devpki.issue(ca_key, ca, "CN=Plain", token.public_key("k1"))
        svc.store.update_worker(2, {"SIGNERCERTCHAIN": encode_certificate_property([cert, ca])})
        svc.runtime.load()
        assert svc.runtime.get("Plain").status().active
        svc.store.update_worker(2, {"DEFAULTKEY": "k2"})
        svc.runtime.load()
        worker = svc.runtime.get("Plain")
        status = worker.status()
        assert not status.active and "does not match key 'k2'" in " ".join(status.reasons)
        with pytest.raises(WorkerOfflineError, match="does not match key 'k2'"):
            asyncio.run(worker.process(SignRequest(data=b"x", request_id="1")))
    finally:
        svc.close()
