"""Token activation reaches every process of a server started with ``--workers 2``.

The token of worker ``Manual`` has no stored password, so each server process starts with it
inactive. One ``signpeer activatecryptotoken`` (answered by whichever process takes the call)
must make both processes sign, and one ``deactivatecryptotoken`` must stop both.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from signpeer_core.testing import PKI, add_signer, client_context, signpeer_cmd, wait_until

PROCESS = "/signserver/rest/v1/workers/Manual/process"
HEADERS = {"X-Keyfactor-Requested-With": "tests"}


def _fresh_request(url: str, pki: PKI) -> httpx.Response:
    # A new connection each time: the kernel hands connections to either process.
    return httpx.post(url + PROCESS, json={"data": "x"}, verify=client_context(pki.ca_pem), headers=HEADERS)


def test_activation_reaches_every_server_process(signpeer_home: Path, services, pki: PKI, start_server) -> None:
    wid = add_signer(services, pki, "Manual", AUTHTYPE="NOAUTH")
    services.store.update_worker(wid, remove=["KEYSTOREPASSWORD"])  # no auto-activation
    server = start_server(signpeer_home, "--workers", "2")
    env = {**os.environ, "SIGNPEER_HOME": str(signpeer_home)}

    assert _fresh_request(server.url, pki).status_code == 503
    done = subprocess.run(signpeer_cmd("activatecryptotoken", "Manual", "foo123"), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr + server.log()

    # Both processes sign: successes from two request-id prefixes (one per process), then a run
    # of successes on fresh connections (a process still inactive would answer 503).
    prefixes: set[str] = set()

    def both_sign() -> bool:
        r = _fresh_request(server.url, pki)
        if r.status_code == 200:
            prefixes.add(r.json()["requestId"].split("-")[0])
        return len(prefixes) == 2

    wait_until(both_sign, what="both server processes signing")
    assert all(_fresh_request(server.url, pki).status_code == 200 for _ in range(20)), server.log()

    done = subprocess.run(signpeer_cmd("deactivatecryptotoken", "Manual"), env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: all(_fresh_request(server.url, pki).status_code == 503 for _ in range(20)),
               what="both server processes refusing")

    # The sealed code is in the database, but opens only with the running server's secret.
    stored = services.store.token_activations(services.settings.node_id)
    assert stored[wid][0] is False and stored[wid][1] is None
    assert server.stop() == 0


def test_a_restart_forgets_published_codes(signpeer_home: Path, services, pki: PKI, start_server) -> None:
    wid = add_signer(services, pki, "Manual", AUTHTYPE="NOAUTH")
    services.store.update_worker(wid, remove=["KEYSTOREPASSWORD"])
    server = start_server(signpeer_home)
    env = {**os.environ, "SIGNPEER_HOME": str(signpeer_home)}
    done = subprocess.run(signpeer_cmd("activatecryptotoken", "Manual", "foo123"), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    active, sealed = services.store.token_activations(services.settings.node_id)[wid]
    assert active and sealed and b"foo123" not in sealed
    assert server.stop() == 0
    server = start_server(signpeer_home)
    assert services.store.token_activations(services.settings.node_id) == {}
    assert _fresh_request(server.url, pki).status_code == 503


def test_processes_agree_after_a_reload_that_rebuilds_the_token(signpeer_home: Path, pki: PKI) -> None:
    """Two processes of one server (two Services sharing the database and the run's secret):
    a reload done inside either process rebuilds the token, and the new instance is given the
    published activation there too, instead of coming up inactive in that process only."""
    import dataclasses
    import secrets

    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import Admin

    settings = dataclasses.replace(load_settings(signpeer_home), activation_secret=secrets.token_hex(32))
    a, b = Services.open(settings), Services.open(settings)
    try:
        wid = add_signer(a, pki, "Manual", AUTHTYPE="NOAUTH")
        a.store.update_worker(wid, remove=["KEYSTOREPASSWORD"])
        a.runtime.load()
        b.runtime.load()
        assert not a.runtime.get("Manual").token.is_active and not b.runtime.get("Manual").token.is_active
        WorkerAdmin(a, Admin("tests")).activate("Manual", "foo123")
        b.activation.apply()  # what b's poller does when activation_generation moves
        assert b.runtime.get("Manual").token.is_active
        # A property of the token changes: the next load builds a new token instance.
        a.store.update_worker(wid, {"SELFSIGNED_VALIDITY": "400"})
        WorkerAdmin(a, Admin("tests")).reload("all")
        b.runtime.load()
        for services in (a, b):
            worker = services.runtime.get("Manual")
            assert worker.token.is_active and worker.status().active, worker.status().reasons
        WorkerAdmin(b, Admin("tests")).deactivate("Manual")
        a.activation.apply()
        assert not a.runtime.get("Manual").token.is_active
    finally:
        a.close()
        b.close()
