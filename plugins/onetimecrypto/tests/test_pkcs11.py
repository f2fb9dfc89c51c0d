"""One-time keys in a real SoftHSM2 token, checked independently with ``pkcs11-tool``.

SoftHSM2 reads its configuration once per process, and the PKCS#11 token's own tests use
another token: so everything that loads the module runs in a subprocess here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
CHILD = Path(__file__).with_name("pkcs11_child.py")


@pytest.fixture
def softhsm(tmp_path: Path) -> dict[str, Any]:
    if shutil.which("softhsm2-util") is None or shutil.which("pkcs11-tool") is None or not Path(MODULE).exists():
        pytest.skip("SoftHSM2/OpenSC not installed: apt-get install -y softhsm2 opensc")
    root = tmp_path / "softhsm"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "onetime", "--pin", "1234",
                    "--so-pin", "5678"], check=True, capture_output=True, env=env)
    return {"env": env, "label": "onetime", "pin": "1234"}


def list_objects(hsm: dict[str, Any]) -> str:
    out = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", hsm["label"], "--login", "--pin",
                          hsm["pin"], "--list-objects"], env=hsm["env"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("storage, count", [("SESSION", 1000), ("TOKEN", 60)])
def test_no_one_time_key_left_in_the_token(softhsm: dict[str, Any], home: Path, pki: Any, tmp_path: Path,
                                           storage: str, count: int) -> None:
    out = subprocess.run([sys.executable, str(CHILD), str(home), MODULE, softhsm["label"], softhsm["pin"], str(count),
                          storage], env=softhsm["env"], capture_output=True, text=True, timeout=600, cwd=home,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(not r for r in summary["reasons"].values()), summary["reasons"]
    assert summary["source"] == ("SessionObjectKeys" if storage == "SESSION" else "TokenObjectKeys")
    outcomes = summary["outcomes"]
    assert outcomes.get("ok", 0) > count // 3 and outcomes.get("CARefusedError") and \
        outcomes.get("ServiceUnavailableError") and outcomes.get("cancelled"), outcomes
    assert sum(outcomes.values()) == count
    assert summary["live"] == 0
    assert summary["in_session"] == []  # what the server's own session still sees (session objects)
    listing = list_objects(softhsm)
    assert not re.findall(r"label:\s+onetime-", listing), listing
    # The signatures were made inside the token and verify against the CA.
    for sig_hex, data in summary["signatures"]:
        sig = tmp_path / "sig.p7m"
        sig.write_bytes(bytes.fromhex(sig_hex))
        v = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(sig), "-CAfile", str(pki.ca_pem),
                            "-purpose", "any"], capture_output=True, check=False)
        assert v.returncode == 0 and v.stdout == data.encode(), v.stderr


def _setup_hsm_ra(home: Path, hsm: dict[str, Any], ca_peer: Any, wait_timeout: str) -> None:
    from signpeer_core.clientrules import ClientRule, serialize_rules
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    # load=False: loading the workers would initialize the PKCS#11 module in the test process,
    # and SoftHSM2 reads its configuration only once per process (the pkcs11token tests need theirs).
    services = Services.open(load_settings(home), load=False)
    try:
        store = services.store
        store.update_global({"GLOB.PEERS_INCOMING_ENABLED": "true",
                             "GLOB.WSPEERS": serialize_rules([ClientRule.for_certificate(ca_peer.cert)])})
        store.update_worker(1, {"NAME": "HSM", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "PKCS11CryptoToken", "SHAREDLIBRARY": MODULE,
                                "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": hsm["label"], "PIN": hsm["pin"]})
        store.update_worker(2, {"NAME": "OneTimeRA", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "HSM",
                                "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", "KEYSTORAGE": "TOKEN",
                                "CACONNECTOR_IMPLEMENTATION": "EjbcaPeersCAConnector", "CANAME": "HsmCA",
                                "ENDENTITYPROFILE": "EMPTY", "CERTIFICATEPROFILE": "ENDUSER",
                                "USERNAME_PATTERN": "onetime-${transactionId}",
                                "SUBJECTDN_PATTERN": "CN=${username},UID=${transactionId}",
                                "CACONNECTOR_WAITTIMEOUT": wait_timeout})
        store.update_worker(3, {"NAME": "Signer", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                                "CRYPTOTOKEN": "OneTimeRA", "AUTHTYPE": "USERNAME", "ACCEPT_ALL_USERNAMES": "true"})
    finally:
        services.close()


def _set_wait_timeout(home: Path, seconds: str) -> None:
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    services = Services.open(load_settings(home), load=False)  # load=False: see _setup_hsm_ra
    try:
        services.store.update_worker(2, {"CACONNECTOR_WAITTIMEOUT": seconds})
    finally:
        services.close()


def test_tls_ra_with_hsm_failures_disconnects_and_a_killed_server(softhsm: dict[str, Any], home: Path, pki: Any,
                                                                  start_server: Any, tmp_path: Path) -> None:
    """Over TLS, one-time keys as token objects (pkcs11-tool can see those from outside): CA
    refusals, unanswered requests, clients that hang up, then the server killed with requests
    queued — keys removed at the next start, queued requests still listed."""
    import base64
    import concurrent.futures
    import hashlib

    import httpx

    from signpeer_core.testing import client_context, run_signpeer, wait_until
    from signpeer_onetimecrypto.connectors import CARefusedError, issue_for_request
    from signpeer_onetimecrypto.raclient import RALoop, ra_client

    def one_time_objects() -> list[str]:
        return re.findall(r"label:\s+onetime-", list_objects(softhsm))

    ca_peer = pki.issue_client("HSM CA peer")
    _setup_hsm_ra(home, softhsm, ca_peer, wait_timeout="3")
    env = {"SOFTHSM2_CONF": softhsm["env"]["SOFTHSM2_CONF"]}
    server = start_server(home, env=env)

    def issuer(req: Any) -> Any:
        h = int(hashlib.sha256(req.transaction_id.encode()).hexdigest(), 16) % 10
        if h == 0:
            raise CARefusedError("injected refusal")
        if h == 1:
            return None  # never answered: the signing request times out
        return issue_for_request(pki.ca_key, [pki.ca_cert], req)

    peer_client = ra_client(server.url, ca_peer.pem, ca_peer.key_pem, pki.ca_pem, max_connections=12)
    loop = RALoop(peer_client, issuer, min_parallel=2, max_parallel=6, wait=2.0, lease=1.0).start()
    ctx = client_context(pki.ca_pem)
    outcomes: dict[str, int] = {}

    def one(i: int, stay: float = 30) -> None:
        hang_up = i % 9 == 4
        with httpx.Client(base_url=server.url, verify=ctx, timeout=0.05 if hang_up else stay,
                          headers={"X-Keyfactor-Requested-With": "tests"}) as c:
            try:
                r = c.post("/signserver/rest/v1/workers/Signer/process", auth=(f"u{i}", ""),
                           json={"data": base64.b64encode(b"doc").decode(), "encoding": "BASE64"})
                key = str(r.status_code)
            except httpx.TimeoutException:
                key = "client hung up"
            except httpx.TransportError:
                key = "server gone"
        outcomes[key] = outcomes.get(key, 0) + 1

    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            # 1,000 as the issue asks (~30 s here); SIGNPEER_ONETIME_TLS_REQUESTS=150 for a quick run.
            list(pool.map(one, range(int(os.environ.get("SIGNPEER_ONETIME_TLS_REQUESTS", "1000")))))
    finally:
        loop.close()
        peer_client.close()  # idle connections left open would hold the server's TLS shutdown for 30 s
    print("outcomes over TLS:", outcomes)
    assert outcomes.get("200", 0) > 0.5 * sum(outcomes.values()) and outcomes.get("502") and outcomes.get("503") and \
        outcomes.get("client hung up"), outcomes
    # Requests of clients that hung up end at their wait timeout (3 s after they started waiting,
    # which on a loaded machine is later than 3 s from now): then their keys are gone.
    wait_until(lambda: not one_time_objects(), timeout=120, interval=1.0,
               what="the one-time keys of ended requests to be removed")

    # Kill the server while requests wait in the RA queue (no CA peer now): their keys are in the token.
    # The server restarts with a wait timeout longer than the test, so no held request ends (and
    # removes its key) before all six hold theirs, however slowly they arrive.
    server.stop()
    _set_wait_timeout(home, "600")
    server = start_server(home, env=env)
    hold = concurrent.futures.ThreadPoolExecutor(6)
    # Clients that stay (one() hangs up when i % 9 == 4, and on a loaded machine such a client can
    # give up before its request is even sent).
    staying = [i for i in range(1000, 1100) if i % 9 != 4][:6]
    # They wait until the server is killed, however long the loaded machine takes to get there.
    pending = [hold.submit(one, i, 600) for i in staying]

    def queued_now() -> list[dict[str, Any]]:
        listing = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"]
        # This start's requests wait 600 s; those of the first server had 3 s.
        return [r for r in listing if r["state"] == "pending" and r["deadlineInSeconds"] > 60]

    def six_queued() -> bool:
        # A held request that was answered cannot hold a key any more: say what it got, not "timed out".
        ended = [f for f in pending if f.done()]
        assert not ended, f"held requests ended early: {outcomes}\n{server.log()[-6000:]}"
        return len(queued_now()) >= 6

    # A request is queued for the CA only after its key and CSR are made: six queued requests
    # hold six key pairs. Watched through the RA queue, not with pkcs11-tool: SoftHSM2's file
    # store is not safe for a second process reading it while the server writes new keys.
    try:
        wait_until(six_queued, timeout=180, interval=0.5, what="six queued requests holding one-time keys")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; queued: {queued_now()}\n{server.log()[-6000:]}") from None
    server.proc.kill()
    server.proc.wait(10)
    assert len(one_time_objects()) == 12, server.log()[-6000:]  # 6 key pairs left by the dead process
    for f in pending:
        f.result()
    hold.shutdown()
    listing = json.loads(run_signpeer(home, "ra", "requests", "--json").stdout)["requests"]
    assert sum(1 for r in listing if r["state"] in ("pending", "expired") and r["claims"] == 0) >= 6  # not lost
    restarted = start_server(home, env=env)  # sweeps the keys of the dead process at start
    assert not one_time_objects(), "keys of the killed server were not swept"
    restarted.stop()


def test_keys_of_a_killed_process_are_swept_once_the_token_is_activated(
        softhsm: dict[str, Any], home: Path, start_server: Any, tmp_path: Path) -> None:
    """A token without a PIN in the configuration is inactive when the worker loads: the sweep runs
    when it is activated (issue 11, item 15)."""
    from signpeer_core import devpki
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings
    from signpeer_core.testing import run_signpeer, wait_until

    ca_key, ca_cert = devpki.make_ca("CN=Sweep Test CA, O=signpeer tests")
    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(ca_key))
    services = Services.open(load_settings(home), load=False)  # load=False: see _setup_hsm_ra
    try:
        services.store.update_worker(1, {
            "NAME": "HSM", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "Pkcs11CryptoToken", "SHAREDLIBRARY": MODULE,
            "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": softhsm["label"]})  # no PIN: activated by hand
        services.store.update_worker(2, {
            "NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "HSM",
            "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", "KEYSTORAGE": "TOKEN",
            "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector", "CACERTIFICATE_FILE": "onetime-ca.pem",
            "CAKEY_FILE": "onetime-ca-key.pem", "SUBJECTDN_PATTERN": "CN=${username}"})
    finally:
        services.close()
    # Keys a killed process left: labelled with its (now unused) process id, as the worker names them.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for n in range(2):
        made = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", softhsm["label"], "--login",
                               "--pin", softhsm["pin"], "--keypairgen", "--key-type", "EC:prime256v1", "--label",
                               f"onetime-{dead.pid}-{n:016x}"], env=softhsm["env"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert made.returncode == 0, made.stderr
    orphans = re.findall(rf"label:\s+onetime-{dead.pid}-", list_objects(softhsm))
    assert len(orphans) == 4  # two key pairs

    server = start_server(home, env={"SOFTHSM2_CONF": softhsm["env"]["SOFTHSM2_CONF"]})
    assert len(re.findall(r"label:\s+onetime-", list_objects(softhsm))) == 4  # inactive token: nothing swept
    activated = run_signpeer(home, "activatecryptotoken", "HSM", softhsm["pin"],
                             env={"SOFTHSM2_CONF": softhsm["env"]["SOFTHSM2_CONF"]})
    assert activated.returncode == 0, activated.stderr
    wait_until(lambda: not re.findall(r"label:\s+onetime-", list_objects(softhsm)), timeout=60,
               what="the orphaned one-time keys swept after activation")
    assert "removed 2 one-time keys left over by stopped processes" in server.log()
