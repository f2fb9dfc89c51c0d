"""A key binding's status tells the truth about its certificate: an expired (or not yet valid)
signer certificate makes it OFFLINE with the reason, as signing then answers 503."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.errors import WorkerOfflineError
from signpeer_core.pipeline import Caller, TransportRequest
from signpeer_core.testing import add_signer
from signpeer_peerconnector.bindings import KeyBindings

NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("start,end,reason", [
    (NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1), "expired"),
    (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=30), "not yet valid"),
])
def test_binding_is_offline_when_the_certificate_is_not_valid(services: Any, pki: Any, start: dt.datetime,
                                                              end: dt.datetime, reason: str) -> None:
    wid = add_signer(services, pki, "Dated", PEERS_VISIBLE="true", AUTHTYPE="NOAUTH")
    bindings = KeyBindings(services.runtime)
    assert bindings.get("Dated")["operationalStatus"] == "ONLINE"
    token = services.runtime.get("Dated").token
    # What a certificate that was valid at install becomes with time (installs refuse such a one).
    dated = devpki.issue(pki.ca_key, pki.ca_cert, "CN=Dated", token.public_key("signer00001"),
                         not_before=start, not_after=end)
    services.store.update_worker(wid, {"SIGNERCERTCHAIN": encode_certificate_property([dated, pki.ca_cert])})
    services.runtime.load()
    binding = KeyBindings(services.runtime).get("Dated")
    assert binding["operationalStatus"] == "OFFLINE", binding
    assert any(reason in r for r in binding["offlineReasons"]), binding["offlineReasons"]
    listed = KeyBindings(services.runtime).list_json().decode()
    assert '"operationalStatus":"OFFLINE"' in listed and reason in listed
    with pytest.raises(WorkerOfflineError):
        asyncio.run(services.pipeline.process("Dated", TransportRequest(b"x"), Caller("tests")))
