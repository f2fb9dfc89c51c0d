"""Renewal retires superseded keys under the administrator's policy, audited; keys in use and
keys signpeer did not supersede are never touched (issue 11, item 17)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from signpeer_core.admin import WorkerAdmin
from signpeer_core.administration.key_retirement import Superseded, due
from signpeer_core.errors import BadRequestError
from signpeer_core.storage import Admin
from signpeer_core.testing import add_signer


def renew(services: Any, pki: Any, admin: WorkerAdmin, name: str) -> str:
    """One CA-driven renewal: next key, a certificate for it, install (promotes it)."""
    alias = admin.next_key(name, publish=True).alias
    token = services.runtime.get(name).token
    cert = pki.issue_signer(token.public_key(alias), f"CN={name} {alias}, O=signpeer tests")
    result = admin.install_certificate_chain(name, [cert, pki.ca_cert], reload=True)
    assert result.promoted and result.alias == alias
    return alias


def aliases(services: Any, name: str) -> list[str]:
    return sorted(services.runtime.get(name).token.key_aliases())


def test_without_a_policy_every_key_stays(services: Any, pki: Any) -> None:
    add_signer(services, pki, "Keeper")
    admin = WorkerAdmin(services, Admin("ca"))
    for _ in range(3):
        renew(services, pki, admin, "Keeper")
    assert aliases(services, "Keeper") == ["signer00001", "signer00002", "signer00003", "signer00004"]
    recorded = services.store.worker_properties(services.runtime.get("Keeper").id)["SUPERSEDEDKEYS"]
    assert [part.split("@")[0] for part in recorded.split(";")] == ["signer00001", "signer00002", "signer00003"]


def test_keep_the_newest_n_superseded_keys(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Renewed", SUPERSEDEDKEYS_KEEP="1")
    admin = WorkerAdmin(services, Admin("CN=EJBCA Peer"))
    renew(services, pki, admin, "Renewed")
    assert aliases(services, "Renewed") == ["signer00001", "signer00002"]  # one superseded key: kept
    renew(services, pki, admin, "Renewed")
    assert aliases(services, "Renewed") == ["signer00002", "signer00003"]
    renew(services, pki, admin, "Renewed")
    assert aliases(services, "Renewed") == ["signer00003", "signer00004"]
    props = services.store.worker_properties(wid)
    assert props["DEFAULTKEY"] == "signer00004" and props["SUPERSEDEDKEYS"].startswith("signer00003@")
    removals = services.store.audit_events(event="KEYREMOVE", worker_id=wid)
    assert [e.details["KEYALIAS"] for e in removals] == ["signer00002", "signer00001"]
    assert all(e.admin.name == "CN=EJBCA Peer" and "superseded since" in e.details["REASON"]
               and "SUPERSEDEDKEYS_KEEP=1" in e.details["REASON"] for e in removals)


def test_the_grace_period_keeps_a_superseded_key_until_it_ends(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Patient", SUPERSEDEDKEYS_GRACEPERIOD="3600")
    admin = WorkerAdmin(services, Admin("ca"))
    renew(services, pki, admin, "Patient")
    renew(services, pki, admin, "Patient")
    assert aliases(services, "Patient") == ["signer00001", "signer00002", "signer00003"]
    assert admin.retire_superseded_keys(wid, now=time.time() + 1800) == []
    assert sorted(admin.retire_superseded_keys(wid, now=time.time() + 7200)) == ["signer00001", "signer00002"]
    assert aliases(services, "Patient") == ["signer00003"]
    assert "SUPERSEDEDKEYS" not in services.store.worker_properties(wid)


def test_a_key_in_use_by_another_worker_is_never_retired(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Shared", SUPERSEDEDKEYS_KEEP="0")
    other = services.store.next_worker_id()
    services.store.update_worker(other, {"NAME": "Other", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                                         "CRYPTOTOKEN": "Shared", "DEFAULTKEY": "signer00001"})
    services.runtime.load()
    admin = WorkerAdmin(services, Admin("ca"))
    renew(services, pki, admin, "Shared")
    assert aliases(services, "Shared") == ["signer00001", "signer00002"]
    assert "SUPERSEDEDKEYS" not in services.store.worker_properties(wid)  # in use: not superseded any more
    services.runtime.get("Shared").token.generate_key("hand-made", "ECDSA", "secp256r1")
    renew(services, pki, admin, "Shared")
    assert "hand-made" in aliases(services, "Shared")  # never recorded as superseded: never touched


def test_policy_arithmetic_and_a_bad_value() -> None:
    entries = [Superseded("a", 100.0), Superseded("b", 200.0), Superseded("c", 300.0)]
    assert due(entries, 1000.0, None, None) == []
    assert [e.alias for e in due(entries, 1000.0, None, 1)] == ["b", "a"]
    assert [e.alias for e in due(entries, 1000.0, 750.0, None)] == ["b", "a"]
    assert [e.alias for e in due(entries, 1000.0, 750.0, 2)] == ["a"]
    same_second = [Superseded("old", 500.0), Superseded("new", 500.0)]  # recorded in this order
    assert [e.alias for e in due(same_second, 1000.0, None, 1)] == ["old"]


def test_a_bad_policy_value_is_a_clear_error(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Odd", SUPERSEDEDKEYS_KEEP="many")
    admin = WorkerAdmin(services, Admin("ca"))
    renew(services, pki, admin, "Odd")  # the renewal itself succeeds
    with pytest.raises(BadRequestError, match="SUPERSEDEDKEYS_KEEP must be a number of keys"):
        admin.retire_superseded_keys(wid)


def test_the_retirekeys_command(services: Any, pki: Any, signpeer: Any) -> None:
    add_signer(services, pki, "ByHand")
    admin = WorkerAdmin(services, Admin("ca"))
    renew(services, pki, admin, "ByHand")
    renew(services, pki, admin, "ByHand")
    code, out, err = signpeer.in_process("retirekeys", "ByHand")
    assert (code, out.strip()) == (0, "Retired 0 superseded key(s)"), err
    assert signpeer.in_process("setproperty", "ByHand", "SUPERSEDEDKEYS_KEEP", "1").code == 0
    code, out, err = signpeer.in_process("retirekeys", "ByHand")
    assert (code, out.strip()) == (0, "Retired 1 superseded key(s): signer00001"), err
    services.runtime.load()
    assert aliases(services, "ByHand") == ["signer00002", "signer00003"]
