"""SignServer's PKCS#11 flow with a PIN that is never stored: ``activatecryptotoken`` against a
running server, then ``generatekey``, ``generatecertreq`` and ``testkey`` from the CLI. The CLI
process never holds the activation, so it sends those operations to the server's admin API
(signpeer_core/keyadmin.py). Checked from outside: ``pkcs11-tool`` finds the key on the token and
reads its public key, ``openssl req -verify`` verifies the request and its key is that one. With
``serve --workers 2`` both processes must answer with the token active and the key usable.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.testing import wait_until

P11 = "org.signserver.server.cryptotokens.PKCS11CryptoToken"


def _crypto_worker(services: Any, hsm: Any, name: str) -> int:
    from signpeer_core.storage import Admin, AuditEvent

    wid = services.store.next_worker_id()
    props = {"NAME": name, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "org.signserver.server.signers.CryptoWorker",
             "CRYPTOTOKEN_IMPLEMENTATION_CLASS": P11, **hsm.props()}
    del props["PIN"]  # never stored: only an activation in the server's memory unlocks it
    services.store.update_worker(wid, props, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("tests"), wid)])
    return wid


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def _public_key_on_token(hsm: Any, alias: str, tmp: Path) -> str:
    """The key's public half as pkcs11-tool reads it from the token, as PEM (via openssl)."""
    der = tmp / f"{alias}.pub.der"
    read = subprocess.run(["pkcs11-tool", "--module", hsm.module, "--token-label", hsm.label, "--login", "--pin",
                           hsm.pin, "--read-object", "--type", "pubkey", "--label", alias, "-o", str(der)],
                          env=hsm.env(), capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    pem = _openssl("pkey", "-pubin", "-inform", "DER", "-in", str(der))
    assert pem.returncode == 0, pem.stderr
    return pem.stdout


def _flow(home: Path, hsm: Any, signpeer: Any, alias: str, tmp: Path) -> None:
    """activate, generatekey, generatecertreq, testkey, each checked from outside."""
    # Before activation the server refuses too: the CLI reports its "not activated".
    refused = signpeer("generatekey", "CryptoTokenP11", "-keyalg", "ECDSA", "-keyspec", "secp256r1", "-alias", alias)
    assert refused.code == 254 and "not activated" in refused.err, refused
    assert f"label:      {alias}" not in hsm.list_objects()

    done = signpeer("activatecryptotoken", "CryptoTokenP11", hsm.pin)
    assert done.code == 0 and "Activation of worker was successful" in done.out, done

    made = signpeer("generatekey", "CryptoTokenP11", "-keyalg", "ECDSA", "-keyspec", "secp256r1", "-alias", alias)
    assert made.code == 0, made
    assert f"Created key : {alias}" in made.out and "in the running server" in made.out
    objects = hsm.list_objects()
    assert objects.count(f"label:      {alias}") == 2, objects  # the private and the public key object

    req = tmp / f"{alias}.csr.pem"
    csr = signpeer("generatecertreq", "CryptoTokenP11", f"CN={alias},O=signpeer tests", "SHA256WithECDSA",
                   str(req), "-alias", alias)
    assert csr.code == 0 and f"PKCS10 Request successfully written to file {req}" in csr.out, csr
    verified = _openssl("req", "-in", str(req), "-verify", "-noout", "-subject")
    assert verified.returncode == 0 and alias in verified.stdout, verified.stdout + verified.stderr
    in_request = _openssl("req", "-in", str(req), "-pubkey", "-noout")
    assert in_request.stdout == _public_key_on_token(hsm, alias, tmp)

    tested = signpeer("testkey", "CryptoTokenP11", alias)
    assert tested.code == 0 and f"Key alias: {alias}, EC" in tested.out and "SUCCESS" in tested.out, tested


def test_pin_never_stored_key_operations_reach_the_one_process_server(
        home: Path, services: Any, hsm: Any, signpeer: Any, start_server: Any, alias: str, tmp_path: Path,
        pki: Any) -> None:
    # Eight CLI processes and pkcs11-tool/openssl runs, ~3 s each on a loaded machine: ~25 s.
    _crypto_worker(services, hsm, "CryptoTokenP11")
    server = start_server(home, env={"SOFTHSM2_CONF": str(hsm.conf)})
    _flow(home, hsm, signpeer, alias, tmp_path)
    # A missing key is the token's answer, relayed with a failing exit code.
    missing = signpeer("testkey", "CryptoTokenP11", alias + "nope")
    assert missing.code == 254 and "FAILURE" in missing.out, missing
    listed = signpeer("querytokenentries", "-token", "CryptoTokenP11", "-criteria", f"alias EQ {alias}", "-v")
    assert listed.code == 0 and listed.out.startswith(f"0: {alias}\n   Type: PRIVATEKEY_ENTRY\n   Key: EC"), listed

    # The curl example of docs/rest-api.md ("Key operations"), with an alias of this test.
    text = (Path(__file__).resolve().parents[3] / "docs" / "rest-api.md").read_text()
    script = re.findall(r"```sh\n(.*?)```", text.split("## Key operations", 1)[1], flags=re.S)[0]
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("signKey2", alias + "c")],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "CA": str(pki.ca_pem), "URL": server.url,
                              "ADMIN": f"--cert {pki.admin.pem} --key {pki.admin.key_pem}"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'"alias":"{alias}c"' in out.stdout.replace(" ", "") and "BEGIN CERTIFICATE REQUEST" in out.stdout
    assert f"label:      {alias}c" in hsm.list_objects()


def test_pin_never_stored_key_operations_with_two_server_processes(
        home: Path, services: Any, hsm: Any, signpeer: Any, start_server: Any, https_client: Any, alias: str,
        tmp_path: Path) -> None:
    # The same flow plus both processes answering: ~35 s on a loaded machine (CLI processes).
    wid = _crypto_worker(services, hsm, "CryptoTokenP11")
    server = start_server(home, "--workers", "2", env={"SOFTHSM2_CONF": str(hsm.conf)})
    wait_until(lambda: len(services.store.nodes.live()) == 2, timeout=30, what="two registered server processes")
    _flow(home, hsm, signpeer, alias, tmp_path)

    # Whichever process answers holds the activation and finds the key the other one may have
    # made: ask both (a new connection each time; the kernel hands them to either process).
    pids = {p.pid for p in services.store.nodes.live()}
    answered: set[int] = set()

    def both_test_the_key() -> bool:
        with https_client(server, "admin") as client:
            r = client.post(f"/signserver/rest/v1/workers/{wid}/keys/test", json={"alias": alias})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [row["success"] for row in body["results"]] == [True], body
        answered.add(body["pid"])
        return answered == pids

    wait_until(both_test_the_key, timeout=60, what="both server processes testing the key")

    # A key made by the CLI through one process is usable by the other: a second key, then both
    # tested by each process (the token is searched for keys a process has not seen).
    second = alias + "b"
    made = signpeer("generatekey", "CryptoTokenP11", "-keyalg", "RSA", "-keyspec", "2048", "-alias", second)
    assert made.code == 0, made
    seen: dict[int, list[str]] = {}

    def both_list_both_keys() -> bool:
        with https_client(server, "admin") as client:
            r = client.post(f"/signserver/rest/v1/workers/{wid}/keys/test", json={"alias": "all"})
        body = r.json()
        ok = {row["alias"] for row in body["results"] if row["success"]}
        if {alias, second} <= ok:
            seen[body["pid"]] = sorted(ok)
        return set(seen) == pids

    wait_until(both_list_both_keys, timeout=60, what="both processes using both keys")


def test_a_token_active_in_the_cli_process_works_without_a_server(
        home: Path, services: Any, hsm: Any, signpeer: Any, alias: str) -> None:
    """With the PIN stored the CLI's own token is active: the operations run here, offline."""
    wid = _crypto_worker(services, hsm, "CryptoTokenP11")
    services.store.update_worker(wid, {"PIN": hsm.pin})
    made = signpeer("generatekey", "CryptoTokenP11", "-keyalg", "ECDSA", "-keyspec", "secp256r1", "-alias", alias)
    assert made.code == 0 and f"Created key : {alias}" in made.out and "running server" not in made.out, made
    tested = signpeer("testkey", "CryptoTokenP11", alias)
    assert tested.code == 0 and "SUCCESS" in tested.out, tested


@pytest.fixture(autouse=True)
def _needs_softhsm(hsm: Any) -> None:
    """Every test here needs the SoftHSM2 token (skipped with the reason when it is missing)."""
