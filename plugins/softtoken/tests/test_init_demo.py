"""``signpeer init`` with the soft token installed: the demo signer (crypto worker ``DemoCryptoToken``,
a PKCS#12 keystore, and ``DemoCMSSigner``, ids 90001/90002) and the printed commands working against a real
``signpeer serve`` (curl to sign, openssl to verify). The data directory itself is tested in the
core's tests/test_init.py."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signpeer_core.cli.main import main
from signpeer_core.keys import public_key_der
from signpeer_core.settings import load_settings

SIGNPEER = Path(sys.executable).parent / "signpeer"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SIGNPEER_")]:
        monkeypatch.delenv(var)


def init(home: Path, capsys: Any, *extra: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "init", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_demo_signer_is_active_in_a_fresh_process(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    code, out, _ = init(home, capsys)
    assert code == 0 and (home / "keystores" / "demo.p12").exists()
    tls = home / "tls"
    assert "curl " in out and f"--cacert {tls / 'ca.pem'}" in out and "X-Keyfactor-Requested-With: 1" in out
    # The printed command needs no jq (checked on the command itself: the random admin.p12
    # password printed above it may contain the letters "jq").
    curl = next(line for line in out.splitlines() if line.strip().startswith("curl "))
    assert "python3 -c" in curl and "jq" not in curl
    assert f"openssl cms -verify -CAfile {tls / 'ca.pem'} -inform DER" in out
    code = main(["--home", str(home), "getstatus", "brief", "all"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("Worker status : Active") == 2
    with sqlite3.connect(home / "signpeer.db") as db:
        props = {wid: {} for (wid,) in db.execute("SELECT DISTINCT worker_id FROM worker_properties")}
        for wid, key, value in db.execute("SELECT worker_id, key, value FROM worker_properties"):
            props[wid][key] = value
    token, signer = props[90001], props[90002]
    assert token["NAME"] == "DemoCryptoToken" and token["CRYPTOTOKEN_IMPLEMENTATION_CLASS"] == "SoftCryptoToken"
    assert token["KEYSTORETYPE"] == "PKCS12" and token["KEYSTOREPATH"] == "keystores/demo.p12"
    assert len(token["KEYSTOREPASSWORD"]) >= 16
    assert signer["NAME"] == "DemoCMSSigner" and signer["IMPLEMENTATION_CLASS"] == "CMSSigner"
    assert signer["CRYPTOTOKEN"] == "DemoCryptoToken" and signer["DEFAULTKEY"] == "signer00001"
    # The key is EC P-256 and the certificate is for it (testkey proves the key works).
    assert main(["--home", str(home), "testkey", "DemoCMSSigner", "-v"]) == 0
    assert "EC secp256r1: SUCCESS" in capsys.readouterr().out


def test_init_force_recreates_the_demo_signer(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    assert init(home, capsys)[0] == 0
    ca_before = (home / "tls" / "ca.pem").read_bytes()
    db_before = (home / "signpeer.db").read_bytes()
    code, _, err = init(home, capsys)
    assert code != 0 and "--force" in err and "already a signpeer data directory" in err
    assert (home / "tls" / "ca.pem").read_bytes() == ca_before
    assert (home / "signpeer.db").read_bytes() == db_before
    (home / "mine.txt").write_text("keep me")
    code, out, err = init(home, capsys, "--force")
    assert code == 0, err
    assert (home / "tls" / "ca.pem").read_bytes() != ca_before
    assert (home / "mine.txt").read_text() == "keep me"
    with sqlite3.connect(home / "signpeer.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT worker_id) FROM worker_properties").fetchone()[0] == 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_printed_commands_sign_and_verify_against_a_real_server(tmp_path: Path, start_server: Any) -> None:
    home = tmp_path / "home"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run([str(SIGNPEER), "--home", str(home), "init"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stderr + result.stdout  # a first run prints no warning a new user must puzzle over
    lines = result.stdout.splitlines()
    curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
    verify = next(line.strip() for line in lines if line.strip().startswith("openssl cms -verify"))
    server = start_server(home)
    curl = re.sub(r"https://127\.0\.0\.1:\d+", server.url, curl)
    work = tmp_path / "work"
    work.mkdir()
    signed = subprocess.run(["bash", "-c", "set -o pipefail; " + curl], cwd=work, capture_output=True, text=True,
                            timeout=60)
    assert signed.returncode == 0, signed.stderr + server.log()
    checked = subprocess.run(["bash", "-c", verify], cwd=work, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "Hello, signpeer!" in checked.stdout, checked.stderr

    # activatecryptotoken/deactivatecryptotoken reach the running server's token through its admin API.
    sp_env = {**env, "SIGNPEER_HOME": str(home)}
    off = subprocess.run([str(SIGNPEER), "deactivatecryptotoken", "DemoCryptoToken"], capture_output=True,
                         text=True, env=sp_env, timeout=60)
    assert off.returncode == 0, off.stderr
    refused = subprocess.run(["bash", "-c", "set -o pipefail; " + curl], cwd=work, capture_output=True, text=True)
    assert refused.returncode != 0
    wrong = subprocess.run([str(SIGNPEER), "activatecryptotoken", "DemoCryptoToken", "wrong"], capture_output=True,
                           text=True, env=sp_env, timeout=60)
    assert wrong.returncode != 0 and "wrong password" in wrong.stderr
    password = subprocess.run([str(SIGNPEER), "getproperty", "DemoCryptoToken", "KEYSTOREPASSWORD"],
                              capture_output=True, text=True, env=sp_env).stdout.strip()
    on = subprocess.run([str(SIGNPEER), "activatecryptotoken", "DemoCryptoToken"], input=password + "\n",
                        capture_output=True, text=True, env=sp_env, timeout=60)
    assert on.returncode == 0 and "Activation of worker was successful" in on.stdout and "running server, pid" in on.stdout, on.stderr
    again = subprocess.run(["bash", "-c", "set -o pipefail; " + curl], cwd=work, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def test_demo_key_matches_its_certificate(tmp_path: Path, capsys: Any) -> None:
    from signpeer_core.services import Services

    home = tmp_path / "home"
    assert init(home, capsys)[0] == 0
    services = Services.open(load_settings(home))
    try:
        worker = services.runtime.get("DemoCMSSigner")
        assert worker.chain and public_key_der(worker.chain[0]) == public_key_der(worker.token.public_key("signer00001"))
        assert worker.chain[1].subject == x509.load_pem_x509_certificate((home / "tls" / "ca.pem").read_bytes()).subject
    finally:
        services.close()


# A SignServer property file in the shape of its keystore-crypto and cmssigner samples (our own).
SIGNSERVER_STYLE = """\
WORKERGENID1.TYPE=CRYPTO_WORKER
WORKERGENID1.IMPLEMENTATION_CLASS=org.signserver.server.signers.CryptoWorker
WORKERGENID1.CRYPTOTOKEN_IMPLEMENTATION_CLASS=org.signserver.server.cryptotokens.KeystoreCryptoToken
WORKERGENID1.NAME=CryptoTokenP12
WORKERGENID1.KEYSTORETYPE=INTERNAL
WORKERGENID1.KEYSTOREPASSWORD=foo123

WORKERGENID2.TYPE=PROCESSABLE
WORKERGENID2.IMPLEMENTATION_CLASS=org.signserver.module.cmssigner.CMSSigner
WORKERGENID2.NAME=CMSSigner
WORKERGENID2.CRYPTOTOKEN=CryptoTokenP12
WORKERGENID2.DEFAULTKEY=signer00003
"""


def test_signserver_material_loads_next_to_the_demo(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    assert init(home, capsys)[0] == 0
    props = tmp_path / "signserver.properties"
    props.write_text(SIGNSERVER_STYLE)
    code = main(["--home", str(home), "setproperties", str(props)])
    out = capsys.readouterr().out
    assert code == 0 and "Created worker 1 (WORKERGENID1)" in out and "Created worker 2 (WORKERGENID2)" in out
    # The quick start's "setproperty 1 ..." and "reload 2" reach the new workers, not the demo.
    assert main(["--home", str(home), "setproperty", "1", "DEFAULTKEY", "signer00003"]) == 0
    assert main(["--home", str(home), "reload", "2"]) == 0
    out = capsys.readouterr().out
    assert "SignServer reloaded successfully" in out and "Current configuration is now activated." in out
    assert main(["--home", str(home), "getproperty", "1", "NAME"]) == 0
    assert capsys.readouterr().out == "CryptoTokenP12\n"
    assert main(["--home", str(home), "getproperty", "DemoCMSSigner", "CRYPTOTOKEN"]) == 0
    assert capsys.readouterr().out == "DemoCryptoToken\n"
    # The demo goes away with removeworker (SignServer's command and messages).
    assert main(["--home", str(home), "removeworker", "DemoCMSSigner"]) == 0
    out = capsys.readouterr().out
    assert "Removing all properties related to worker with ID 90002" in out and "  Property 'NAME' removed." in out
    assert main(["--home", str(home), "getconfig", "90002"]) == 254
    assert "90002" in capsys.readouterr().err


def test_init_empty_has_no_workers_and_ids_start_at_one(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    code, out, _ = init(home, capsys, "--empty")
    assert code == 0 and "No demo workers" in out and "curl" not in out
    with sqlite3.connect(home / "signpeer.db") as db:
        assert db.execute("SELECT COUNT(*) FROM worker_properties").fetchone()[0] == 0
    props = tmp_path / "signserver.properties"
    props.write_text(SIGNSERVER_STYLE)
    assert main(["--home", str(home), "setproperties", str(props)]) == 0
    assert "Created worker 1 (WORKERGENID1)" in capsys.readouterr().out


def test_old_scripts_host_option_is_stripped_with_a_warning(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "SIGNPEER_HOME": str(home)}
    assert subprocess.run([str(SIGNPEER), "init", "--empty"], capture_output=True, env=env, timeout=120).returncode == 0
    props = tmp_path / "signserver.properties"
    props.write_text(SIGNSERVER_STYLE)
    done = subprocess.run([str(SIGNPEER), "setproperties", "-host", "node3.example.com", str(props)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ignoring '-host node3.example.com'" in done.stderr and "Created worker 2" in done.stdout
    usage = subprocess.run([str(SIGNPEER), "setproperty", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 255 and "usage:" in usage.stderr
    failed = subprocess.run([str(SIGNPEER), "getconfig", "NoSuch"], capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 254 and "NoSuch" in failed.stderr
