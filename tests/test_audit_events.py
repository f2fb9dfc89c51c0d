"""Events the audit log records besides configuration changes: refused admin REST access
(rate-limited), token activation and deactivation (success and failure), and a refused
certificate install (issue 11, item 22)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.admin import WorkerAdmin
from signpeer_core.errors import ConflictError, CryptoTokenAuthenticationError
from signpeer_core.identity import CertificateIdentity
from signpeer_core.storage import Admin
from signpeer_core.testing import ServerProcess, add_signer, open_services


def events(home: Path, name: str) -> list[Any]:
    services = open_services(home)
    try:
        return services.store.audit_events(event=name)
    finally:
        services.close()


def test_refused_admin_rest_calls_are_audited_once_a_minute(home: Path, pki: Any,
                                                             start_server: Callable[..., ServerProcess],
                                                             https_client: Callable[..., Any]) -> None:
    server = start_server(home)
    stranger = https_client(server, cert="client")
    anonymous = https_client(server)
    for _ in range(3):
        r = stranger.post("/signserver/rest/v1/workers/1/deactivate")
        assert r.status_code == 403
        assert anonymous.post("/signserver/rest/v1/workers/1/deactivate").status_code == 401
    refused = events(home, "ACCESS_CONTROL")
    assert len(refused) == 2, [(e.admin.name, e.details) for e in refused]
    by_cert = next(e for e in refused if e.admin.serial)
    assert by_cert.outcome == "FAILURE" and by_cert.module == "REST"
    assert by_cert.admin.serial == CertificateIdentity.from_certificate(pki.client.cert).serial_hex
    assert by_cert.details["RESOURCE"] == "/signserver/rest/v1/workers/1/deactivate"
    assert by_cert.details["REASON"] == "not an administrator"
    assert "refused REST access" in server.log()


def test_token_activation_and_deactivation_are_audited(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Audited")
    admin = WorkerAdmin(services, Admin("operator"))
    admin.deactivate("Audited")
    with pytest.raises(CryptoTokenAuthenticationError):
        admin.activate("Audited", "wrong")
    admin.activate("Audited", "foo123")
    store = services.store
    deactivations = store.audit_events(event="CRYPTOTOKEN_DEACTIVATION")
    assert [(e.outcome, e.worker_id, e.admin.name) for e in deactivations] == [("SUCCESS", wid, "operator")]
    activations = store.audit_events(event="CRYPTOTOKEN_ACTIVATION")
    assert [e.outcome for e in activations] == ["SUCCESS", "FAILURE"]
    assert "wrong password" in activations[1].details["ERROR"]
    assert activations[0].details == {"CRYPTOTOKEN": "Audited"}


def test_a_refused_certificate_install_is_audited(services: Any, pki: Any) -> None:
    wid = add_signer(services, pki, "Installed")
    admin = WorkerAdmin(services, Admin("operator"))
    before = services.store.worker_properties(wid)
    with pytest.raises(ConflictError):
        admin.install_certificate_chain("Installed", [pki.admin.cert])  # another key's certificate
    assert services.store.worker_properties(wid) == before
    refused = services.store.audit_events(event="CERTINSTALLED")
    assert [(e.outcome, e.worker_id) for e in refused] == [("FAILURE", wid)]
    assert "does not match" in refused[0].details["ERROR"]
