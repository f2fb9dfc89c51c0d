"""Concurrent ``nextkey`` calls from several processes: one key, every caller gets it, none a 409
(issue 11, item 18)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from signpeer_core.services import Services
from signpeer_core.settings import load_settings

PASSWORD = "foo123"
SIGNER = {
    "NAME": "Renewed", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "KeystoreCryptoToken", "KEYSTORETYPE": "PKCS12",
    "KEYSTOREPATH": "keystore.p12", "KEYSTOREPASSWORD": PASSWORD, "DEFAULTKEY": "signer00001",
    "KEYALG": "ECDSA", "KEYSPEC": "secp256r1",
}

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.errors import SignpeerError
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import Admin
    services = Services.open(load_settings(sys.argv[1]))
    start = float(sys.argv[2])
    while time.time() < start:  # every process calls at the same moment
        time.sleep(0.001)
    try:
        result = WorkerAdmin(services, Admin("peer")).next_key("Renewed", publish=True)
        print(json.dumps({"alias": result.alias, "created": result.created}))
    except SignpeerError as exc:
        print(json.dumps({"status": exc.status, "error": exc.message}))
    services.close()
""")


def test_concurrent_nextkey_in_several_processes_makes_one_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    services = Services.open(load_settings(home))
    try:
        services.store.update_worker(1, SIGNER)
        services.runtime.load()
        services.runtime.get("Renewed").token.generate_key("signer00001", "ECDSA", "secp256r1")
    finally:
        services.close()
    import time

    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(home), start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        answers.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert all("alias" in a for a in answers), answers
    assert {a["alias"] for a in answers} == {"signer00002"}
    assert sorted(a["created"] for a in answers) == [False, False, False, True]
    services = Services.open(load_settings(home))
    try:
        assert services.runtime.get("Renewed").token.key_aliases() == ["signer00001", "signer00002"]
        assert services.store.worker_properties(1)["NEXTCERTSIGNKEY"] == "signer00002"
    finally:
        services.close()
