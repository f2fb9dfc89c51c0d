"""The admin commands with SignServer's syntax: output, exit codes, audit records.

Most run in-process through ``signpeer_core.cli.main.main`` (fast); a few run as real
subprocesses of the installed ``signpeer`` script. The workers use the test kit's memory token. openssl verifies CSRs and signatures.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from signpeer_core import devpki
from signpeer_core.certificates import decode_certificate_property
from signpeer_core.cli.main import main
from signpeer_core.testing import MEMORY_TOKEN, TEST_PLUGIN_MODULE

SIGNPEER = Path(sys.executable).parent / "signpeer"


TOKEN = "CryptoToken"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data directory made by ``signpeer init`` with the demo's two workers on the test kit's
    memory token: crypto worker 1 ``CryptoToken`` and signer 2 ``CMSSigner``, whose key
    ``signer00001`` is certified by the directory's development CA."""
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.cli.init import new_password
    from signpeer_core.storage import Admin
    from signpeer_core.testing import open_services

    for var in ("SIGNPEER_HOME", "SIGNPEER_DATABASE_URL", "SIGNPEER_NODE_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SIGNPEER_DISABLED_PLUGINS", "softtoken")  # init makes no soft token demo signer
    h = tmp_path / "home"
    assert main(["--home", str(h), "init"]) == 0
    capsys.readouterr()
    services = open_services(h)
    try:
        admin = WorkerAdmin(services, Admin("signpeer init"))
        admin.create_worker({"NAME": TOKEN, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                             "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": new_password()})
        admin.create_worker({"NAME": "CMSSigner", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                             "CRYPTOTOKEN": TOKEN, "DEFAULTKEY": "signer00001", "AUTHTYPE": "NOAUTH",
                             "KEYALG": "ECDSA", "KEYSPEC": "secp256r1"})
        services.runtime.load()
        alias = admin.generate_key("CMSSigner", "signer00001", "ECDSA", "secp256r1")
        _, token = admin.token("CMSSigner")
        cert, ca = _issue(h, token.public_key(alias), "signpeer demo CMS signer")
        admin.install_certificate_chain("CMSSigner", [cert, ca])
        admin.reload("all")
    finally:
        services.close()
    return h


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["--home", str(home), *args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def audit(home: Path, event: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "signpeer.db") as db:
        rows = db.execute("SELECT details, worker_id FROM audit_log WHERE event=? ORDER BY id DESC", (event,)).fetchall()
    return [dict(json.loads(r[0]), _worker=r[1]) for r in rows]


def test_getstatus_brief_complete_json(home: Path, capsys: Any) -> None:
    code, out, _ = run(home, capsys, "getstatus", "brief", "all")
    assert code == 0
    assert "Status of CryptoWorker with ID 1 (CryptoToken) is:" in out
    assert "Status of Signer with ID 2 (CMSSigner) is:" in out and "Worker status : Active" in out
    code, out, _ = run(home, capsys, "getstatus", "COMPLETE", "CMSSigner")
    assert code == 0 and "DEFAULTKEY=signer00001" in out and "Signer certificate: CN=signpeer demo CMS signer" in out
    code, out, _ = run(home, capsys, "getstatus", "brief", "1", "--json")
    assert json.loads(out) == [{"id": 1, "name": TOKEN, "status": "ACTIVE", "reasons": []}]
    code, _, err = run(home, capsys, "getstatus", "brief", "NoSuch")
    assert code == 254 and "no worker 'NoSuch'" in err
    code, _, err = run(home, capsys, "getstatus", "sideways", "all")
    assert code == 255 and "invalid choice" in err


def test_getstatus_reports_offline_reasons(home: Path, capsys: Any) -> None:
    assert run(home, capsys, "setproperty", "CMSSigner", "DISABLED", "true")[0] == 0
    assert run(home, capsys, "reload", "CMSSigner")[0] == 0
    code, out, _ = run(home, capsys, "getstatus", "brief", "CMSSigner")
    assert code == 0 and "Worker status : Offline" in out and "DISABLED=true" in out


def test_getconfig_masks_passwords(home: Path, capsys: Any) -> None:
    code, out, _ = run(home, capsys, "getconfig", TOKEN)
    assert code == 0 and "KEYSTOREPASSWORD=********" in out and f"CRYPTOTOKEN_IMPLEMENTATION_CLASS={MEMORY_TOKEN}" in out
    code, out, _ = run(home, capsys, "getconfig", "global")
    assert code == 0 and "GLOB.WSADMINS=" in out
    code, out, _ = run(home, capsys, "getconfig", "2", "--json")
    assert json.loads(out)["CRYPTOTOKEN"] == TOKEN
    assert run(home, capsys, "getconfig", "99")[0] == 254


def test_set_get_remove_property(home: Path, capsys: Any) -> None:
    code, out, _ = run(home, capsys, "setproperty", "CMSSigner", "detachedsignature", "true")
    assert code == 0 and "Setting the property DETACHEDSIGNATURE to true for worker 2" in out
    code, out, _ = run(home, capsys, "getproperty", "cmssigner", "DetachedSignature")
    assert (code, out) == (0, "true\n")
    assert audit(home, "SET_WORKER_CONFIG")[0]["added:DETACHEDSIGNATURE"] == "true"
    code, out, _ = run(home, capsys, "removeproperty", "2", "DETACHEDSIGNATURE")
    assert code == 0 and "  Property Removed" in out
    code, out, _ = run(home, capsys, "removeproperty", "2", "DETACHEDSIGNATURE")
    assert code == 0 and "Error, the property DETACHEDSIGNATURE doesn't seem to exist" in out
    code, _, err = run(home, capsys, "getproperty", "2", "DETACHEDSIGNATURE")
    assert code == 254 and "DETACHEDSIGNATURE is not set" in err
    # global and node scope
    assert run(home, capsys, "setproperty", "global", "PEERS_INCOMING_ENABLED", "true")[0] == 0
    assert run(home, capsys, "getproperty", "global", "peers_incoming_enabled")[1] == "true\n"
    assert audit(home, "SET_GLOBAL_PROPERTY")[0]["GLOBALCONFIG_PROPERTY"] == "GLOB.PEERS_INCOMING_ENABLED"
    assert run(home, capsys, "setproperty", "node", "X", "1")[0] == 0
    assert run(home, capsys, "getproperty", "node", "X")[1] == "1\n"
    assert run(home, capsys, "removeproperty", "global", "PEERS_INCOMING_ENABLED")[0] == 0
    assert audit(home, "REMOVE_GLOBAL_PROPERTY")
    assert run(home, capsys, "removeproperty", "global", "PEERS_INCOMING_ENABLED")[1].endswith("doesn't seem to exist\n")
    # a new worker by id; unknown names are errors
    assert run(home, capsys, "setproperty", "10", "NAME", "Ten")[0] == 0
    assert run(home, capsys, "getproperty", "Ten", "NAME")[1] == "Ten\n"
    code, _, err = run(home, capsys, "setproperty", "NoSuch", "X", "1")
    assert code == 254 and "no worker 'NoSuch'" in err
    assert run(home, capsys, "setproperty", "2", "X")[0] == 255  # missing value: usage


def test_setproperties_and_dumpproperties(home: Path, capsys: Any, tmp_path: Path) -> None:
    good = tmp_path / "good.properties"
    good.write_text("WORKERGENID1.NAME=Plain\nWORKERGENID1.IMPLEMENTATION_CLASS=PlainSigner\n"
                    "WORKERGENID1.CRYPTOTOKEN=CryptoToken\nWORKERGENID1.DEFAULTKEY=signer00001\n"
                    "GLOB.SOMETHING=x\n")
    code, out, _ = run(home, capsys, "setproperties", str(good))
    assert code == 0 and "Created worker 3 (WORKERGENID1)" in out
    bad = tmp_path / "bad.properties"
    bad.write_text("WORKERGENID1.NAME=Other\nNOPREFIX=1\n")
    dump_before = tmp_path / "before.properties"
    assert run(home, capsys, "dumpproperties", "all", str(dump_before))[0] == 0
    code, _, err = run(home, capsys, "setproperties", str(bad))
    assert code == 254 and "line 2" in err and "NOPREFIX" in err
    dump_after = tmp_path / "after.properties"
    code, out, _ = run(home, capsys, "dumpproperties", "all", str(dump_after))
    assert code == 0 and f"Properties successfully dumped into file {dump_after}" in out
    assert dump_after.read_text() == dump_before.read_text()  # the bad file changed nothing
    assert dump_after.stat().st_mode & 0o077 == 0  # it holds keystore passwords
    assert "WORKER3.NAME=Plain" in dump_after.read_text()
    code, _, err = run(home, capsys, "setproperties", str(tmp_path / "missing.properties"))
    assert code == 254 and "no such property file" in err
    code, _, err = run(home, capsys, "dumpproperties", "NoSuch", str(tmp_path / "x"))
    assert code == 254


def test_reload(home: Path, capsys: Any) -> None:
    code, out, _ = run(home, capsys, "reload", "all")
    assert code == 0 and "reloaded successfully" in out
    assert run(home, capsys, "reload", "CMSSigner")[0] == 0
    assert run(home, capsys, "reload", "nope")[0] == 254
    assert len(audit(home, "RELOAD_WORKER_CONFIG")) >= 2


def test_key_commands_and_csr_verified_by_openssl(home: Path, capsys: Any, tmp_path: Path) -> None:
    code, out, _ = run(home, capsys, "generatekey", "CMSSigner")
    assert (code, out) == (0, "Created key : signer00002\n")
    code, out, _ = run(home, capsys, "generatekey", "2", "-keyalg", "RSA", "-keyspec", "2048exp65537",
                       "-alias", "rsakey")
    assert (code, out) == (0, "Created key : rsakey\n")
    keygen = audit(home, "KEYGEN")[0]
    assert keygen["KEYALIAS"] == "rsakey" and keygen["KEYSPEC"] == "2048exp65537" and keygen["_worker"] == 2
    code, _, err = run(home, capsys, "generatekey", "2", "-keyalg", "RSA", "-keyspec", "1234")
    assert code == 254 and "unsupported RSA key size" in err
    code, out, _ = run(home, capsys, "testkey", "CMSSigner", "all", "-v")
    assert code == 0 and out.count("SUCCESS") == 3 and "Certificate:" in out
    code, out, _ = run(home, capsys, "testkey", "CMSSigner")
    assert code == 0 and "signer00001" in out and "signer00002" not in out
    assert run(home, capsys, "testkey", "CMSSigner", "absent")[0] == 254

    req = tmp_path / "req.pem"
    code, out, _ = run(home, capsys, "generatecertreq", "CMSSigner", "CN=TestCertReq,O=Example,C=SE",
                       "SHA256WithECDSA", str(req), "-alias", "signer00002")
    assert (code, out) == (0, f"PKCS10 Request successfully written to file {req}\n")
    verified = subprocess.run(["openssl", "req", "-verify", "-in", str(req), "-noout", "-subject"],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and "TestCertReq" in verified.stdout
    assert audit(home, "GENCSR")[0]["KEYALIAS"] == "signer00002"
    code, _, err = run(home, capsys, "generatecertreq", "CMSSigner", "CN=x", "SHA256withRSA", str(req))
    assert code == 254 and "does not fit" in err
    code, _, err = run(home, capsys, "generatecertreq", "CMSSigner", "CN=x", "SHA256withECDSA", str(req), "-nextkey")
    assert code == 254 and "NEXTCERTSIGNKEY" in err
    code, _, err = run(home, capsys, "generatecertreq", "CMSSigner", "no-equals-sign", "SHA256withECDSA", str(req))
    assert code == 254 and "distinguished name" in err
    assert run(home, capsys, "generatecertreq", "CMSSigner", "CN=x", "SHA256withECDSA", str(req),
               "-alias", "a", "-nextkey")[0] == 255

    code, out, _ = run(home, capsys, "removekey", "CMSSigner", "-alias", "rsakey", "-noask")
    assert (code, out) == (0, "Key removal: SUCCESS\n")
    assert audit(home, "KEYREMOVE")[0]["KEYALIAS"] == "rsakey"
    assert run(home, capsys, "removekey", "CMSSigner", "-alias", "rsakey", "-noask")[0] == 254
    assert run(home, capsys, "removekey", "CMSSigner")[0] == 255  # -alias is required


def _issue(home: Path, public_key: Any, cn: str) -> Any:
    ca_key = devpki.load_key_pem(home / "tls" / "ca-key.pem")
    ca = devpki.load_cert_pem(home / "tls" / "ca.pem")
    return devpki.issue(ca_key, ca, f"CN={cn},O=signpeer", public_key, profile="signer"), ca


def test_renewal_by_hand_with_nextkey(home: Path, capsys: Any, tmp_path: Path) -> None:
    """generatekey + NEXTCERTSIGNKEY, CSR with -nextkey, chain upload promotes the key; a wrong
    certificate or a malformed file is refused and changes nothing."""
    from cryptography import x509

    assert run(home, capsys, "generatekey", "CMSSigner")[0] == 0
    assert run(home, capsys, "setproperty", "CMSSigner", "NEXTCERTSIGNKEY", "signer00002")[0] == 0
    req = tmp_path / "next.pem"
    assert run(home, capsys, "generatecertreq", "CMSSigner", "CN=Renewed", "SHA256withECDSA", str(req),
               "-nextkey")[0] == 0
    csr = x509.load_pem_x509_csr(req.read_bytes())
    cert, ca = _issue(home, csr.public_key(), "Renewed CMS signer")
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(devpki.cert_pem(cert, ca))

    def config() -> dict[str, str]:
        with sqlite3.connect(home / "signpeer.db") as db:
            return dict(db.execute("SELECT key, value FROM worker_properties WHERE worker_id=2").fetchall())

    before = config()
    wrong, _ = _issue(home, devpki.new_key().public_key(), "Wrong")
    wrong_file = tmp_path / "wrong.pem"
    wrong_file.write_bytes(devpki.cert_pem(wrong, ca))
    code, _, err = run(home, capsys, "uploadsignercertificatechain", "CMSSigner", "GLOB", str(wrong_file))
    assert code == 254 and "does not match the current or next key" in err
    malformed = tmp_path / "malformed.pem"
    malformed.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    code, _, err = run(home, capsys, "uploadsignercertificatechain", "CMSSigner", "GLOB", str(malformed))
    assert code == 254 and "not a PEM or DER certificate" in err
    assert run(home, capsys, "uploadsignercertificatechain", "CMSSigner", "ELSEWHERE", str(chain_file))[0] == 255
    assert config() == before

    code, out, _ = run(home, capsys, "uploadsignercertificatechain", "CMSSigner", "GLOB", str(chain_file))
    assert code == 0 and "NEXTCERTSIGNKEY) is now DEFAULTKEY" in out
    after = config()
    assert after["DEFAULTKEY"] == "signer00002" and "NEXTCERTSIGNKEY" not in after
    assert decode_certificate_property(after["SIGNERCERTCHAIN"]) == [cert, ca]
    assert audit(home, "KEYSELECTED")[0]["KEYALIAS"] == "signer00002"
    assert audit(home, "CERTINSTALLED")[0]["SCOPE"] == "GLOBAL"

    # uploadsignercertificate: a new leaf for the same key keeps the CA part of the chain.
    again, _ = _issue(home, csr.public_key(), "Renewed again")
    leaf_file = tmp_path / "leaf.pem"
    leaf_file.write_bytes(devpki.cert_pem(again))
    code, out, _ = run(home, capsys, "uploadsignercertificate", "CMSSigner", "NODE", str(leaf_file))
    assert code == 0
    assert decode_certificate_property(config()["SIGNERCERTCHAIN"]) == [again, ca]
    installed = audit(home, "CERTINSTALLED")[0]
    assert (installed["SCOPE"], installed["REQUESTED_SCOPE"]) == ("GLOBAL", "NODE")  # stored worker-wide
    assert run(home, capsys, "reload", "CMSSigner")[0] == 0
    code, out, _ = run(home, capsys, "getstatus", "brief", "CMSSigner")
    assert "Active" in out and "Offline" not in out.split("Worker status")[1].splitlines()[0]

    # importcertificatechain puts the chain into the token next to the key
    code, out, _ = run(home, capsys, "importcertificatechain", TOKEN, str(chain_file), "signer00002")
    assert code == 0 and "Imported certificate chain (2 certificates)" in out
    code, _, err = run(home, capsys, "importcertificatechain", TOKEN, str(chain_file), "signer00001")
    assert code == 254 and "not for key" in err


def test_activate_and_deactivate_without_a_server(home: Path, capsys: Any) -> None:
    password = run(home, capsys, "getproperty", TOKEN, "KEYSTOREPASSWORD")[1].strip()
    code, out, _ = run(home, capsys, "activatecryptotoken", TOKEN, password)
    assert code == 0 and "successful" in out and "No server is running" in out
    code, _, err = run(home, capsys, "activatecryptotoken", TOKEN, "wrong")
    assert code == 254 and "wrong password" in err
    code, out, _ = run(home, capsys, "deactivatecryptotoken", "1")
    assert code == 0 and "Deactivation of worker 1 was successful" in out
    assert run(home, capsys, "activatecryptotoken", "NoSuch", "x")[0] == 254


def test_activate_prompts_for_the_code(home: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    password = run(home, capsys, "getproperty", TOKEN, "KEYSTOREPASSWORD")[1].strip()
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt="": asked.append(prompt) or password)
    assert run(home, capsys, "activatecryptotoken", TOKEN)[0] == 0
    assert asked == ["Enter authentication code: "]


def test_plugins(home: Path, capsys: Any) -> None:
    code, out, _ = run(home, capsys, "plugins")
    assert code == 0 and "signpeer_core.builtin: signpeer-core" in out and MEMORY_TOKEN in out
    code, out, _ = run(home, capsys, "plugins", "--json")
    data = {p["name"]: p for p in json.loads(out)}
    assert data[TEST_PLUGIN_MODULE]["distribution"] == "module (SIGNPEER_EXTRA_PLUGINS)"
    assert "softtoken" not in data  # SIGNPEER_DISABLED_PLUGINS
    assert "CMSSigner" in data["signpeer_core.builtin"]["registers"]["workers"]
    assert "getstatus" in data["signpeer_core.builtin"]["registers"]["commands"]


def test_auditlog_filters(home: Path, capsys: Any) -> None:
    run(home, capsys, "setproperty", "CMSSigner", "A", "1")
    run(home, capsys, "generatekey", "CMSSigner")
    code, out, _ = run(home, capsys, "auditlog", "--event", "keygen", "--worker", "CMSSigner", "--json")
    records = json.loads(out)
    assert code == 0 and len(records) == 2 and {r["event"] for r in records} == {"KEYGEN"}
    assert records[0]["details"]["KEYALIAS"] == "signer00002" and records[0]["admin"].startswith("CLI user")
    code, out, _ = run(home, capsys, "auditlog", "--admin", "signpeer init", "--limit", "1", "--json")
    assert len(json.loads(out)) == 1 and json.loads(out)[0]["admin"] == "signpeer init"
    code, out, _ = run(home, capsys, "auditlog", "--since", "2999-01-01")
    assert code == 0 and "No audit records match." in out
    code, out, _ = run(home, capsys, "auditlog", "--until", "2000-01-01T00:00:00Z", "--json")
    assert json.loads(out) == []
    code, out, _ = run(home, capsys, "auditlog", "--limit", "3")
    assert code == 0 and len(out.strip().splitlines()) == 3 and "EVENT: " in out
    assert run(home, capsys, "auditlog", "--since", "yesterday")[0] == 255
    assert run(home, capsys, "auditlog", "--limit", "0")[0] == 255
    assert run(home, capsys, "auditlog", "--worker", "NoSuch")[0] == 254


def test_help_on_every_command(capsys: Any) -> None:
    from signpeer_core.cli.admin import COMMANDS

    for cls in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([cls.name, "--help"])
        assert exc.value.code == 0
        assert "usage: signpeer " + cls.name in capsys.readouterr().out


def test_no_data_directory_says_init(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run(tmp_path / "none", capsys, "getstatus", "brief", "all")
    assert code == 254 and "signpeer init" in err


def test_a_newer_database_is_refused(home: Path, capsys: Any) -> None:
    with sqlite3.connect(home / "signpeer.db") as db:
        db.execute("UPDATE alembic_version_core SET version_num='core_9999'")
    code, _, err = run(home, capsys, "getconfig", "global")
    assert code == 254 and "schema version core_9999" in err and "upgrade signpeer" in err


def test_an_older_database_is_migrated(home: Path, capsys: Any) -> None:
    """Back to what signpeer 0.1's first schema version had; the next command migrates it."""
    with sqlite3.connect(home / "signpeer.db") as db:
        db.execute("DELETE FROM meta WHERE key NOT IN ('config_generation')")
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        for table in [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]:
            if table not in ("meta", "worker_properties", "global_properties", "audit_log", "keystores",
                             "sqlite_sequence"):
                db.execute(f"DROP TABLE {table}")
    assert run(home, capsys, "getconfig", "CMSSigner")[0] == 0
    with sqlite3.connect(home / "signpeer.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version_core").fetchall() == [("core_0007",)]
        assert db.execute("SELECT value FROM meta WHERE key='activation_generation'").fetchone() == ("0",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "token_activations" in tables


# -- real subprocesses of the installed script -----------------------------------------------------

def sp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "SIGNPEER_HOME": str(home), "HOME": str(home.parent),
           "SIGNPEER_EXTRA_PLUGINS": TEST_PLUGIN_MODULE}
    if os.environ.get("SIGNPEER_KEY"):  # a run on PostgreSQL: one key for its databases (fixtures.py)
        env["SIGNPEER_KEY"] = os.environ["SIGNPEER_KEY"]
    return subprocess.run([str(SIGNPEER), *args], capture_output=True, text=True, env=env, timeout=120)


def test_subprocess_commands(home: Path, tmp_path: Path) -> None:
    result = sp(home, "getstatus", "brief", "all")
    assert result.returncode == 0 and "CMSSigner" in result.stdout
    result = sp(home, "setproperty", "CMSSigner", "REQUESTDN", "CN=From Subprocess")
    assert result.returncode == 0
    req = tmp_path / "req.pem"
    result = sp(home, "generatecertreq", "CMSSigner", "", "SHA256withECDSA", str(req))
    # An empty DN argument falls back to REQUESTDN.
    assert result.returncode == 0, result.stderr
    assert subprocess.run(["openssl", "req", "-verify", "-in", str(req), "-noout"], capture_output=True).returncode == 0
    result = sp(home, "getproperty", "CMSSigner", "NOPE")
    assert result.returncode == 254 and "NOPE is not set" in result.stderr and "Traceback" not in result.stderr
    result = sp(home, "generatekey")
    assert result.returncode == 255 and "usage:" in result.stderr
    dump = tmp_path / "dump.properties"
    assert sp(home, "dumpproperties", "all", str(dump)).returncode == 0
