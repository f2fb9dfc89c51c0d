"""``signpeer init`` without a token plugin: the data directory and its certificates, and what to
install for the demo signer. (The demo signer itself, with the soft token, and its printed commands
are tested in plugins/softtoken/tests/test_init_demo.py.)"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signpeer_core.cli.main import main
from signpeer_core.clientrules import ClientRule, parse_rules
from signpeer_core.settings import load_settings

SIGNPEER = Path(sys.executable).parent / "signpeer"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SIGNPEER_")]:
        monkeypatch.delenv(var)
    # The same result whether or not the soft token plugin is installed.
    monkeypatch.setenv("SIGNPEER_DISABLED_PLUGINS", "softtoken")


def init(home: Path, capsys: Any, *extra: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "init", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_the_data_directory(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    code, out, err = init(home, capsys)
    assert code == 0, err
    tls = home / "tls"
    assert not (home / "keystores").exists()
    for name in ("signpeer.toml", "signpeer.db", "tls/ca.pem", "tls/ca-key.pem",
                 "tls/server.pem", "tls/server-key.pem", "tls/client-ca.pem", "tls/admin.pem",
                 "tls/admin-key.pem", "tls/admin.p12", "tls/admin.p12.password"):
        assert (home / name).exists(), name
    for secret in ("ca-key.pem", "server-key.pem", "admin-key.pem", "admin.p12", "admin.p12.password"):
        assert mode(tls / secret) == 0o600, secret
    # The settings file is all comments: the defaults apply.
    settings = load_settings(home)
    assert (settings.host, settings.port, settings.database) == ("127.0.0.1", 8443, f"sqlite:///{home / 'signpeer.db'}")
    # CA, server certificate for localhost, 127.0.0.1 and ::1, verified by openssl.
    ca = x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((tls / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    for leaf, purpose in (("server.pem", "sslserver"), ("admin.pem", "sslclient")):
        check = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile", str(tls / "ca.pem"),
                                str(tls / leaf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert (tls / "client-ca.pem").read_bytes() == (tls / "ca.pem").read_bytes()
    # The administrator: its rule is in GLOB.WSADMINS; the p12 opens with the printed password.
    admin = x509.load_pem_x509_certificate((tls / "admin.pem").read_bytes())
    with sqlite3.connect(home / "signpeer.db") as db:
        wsadmins = db.execute("SELECT value FROM global_properties WHERE key='GLOB.WSADMINS'").fetchone()[0]
        wsauditors = db.execute("SELECT value FROM global_properties WHERE key='GLOB.WSAUDITORS'").fetchone()[0]
    assert parse_rules(wsadmins) == parse_rules(wsauditors) == [ClientRule.for_certificate(admin)]
    password = (tls / "admin.p12.password").read_text().strip()
    assert password in out
    p12 = subprocess.run(["openssl", "pkcs12", "-in", str(tls / "admin.p12"), "-passin", f"pass:{password}",
                          "-nokeys"], capture_output=True, text=True)
    assert p12.returncode == 0 and "signpeer Administrator" in p12.stdout
    bad = subprocess.run(["openssl", "pkcs12", "-in", str(tls / "admin.p12"), "-passin", "pass:wrong", "-nokeys"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    # No demo signer: init says what to install.
    assert "The demo signer needs the soft crypto token (SoftCryptoToken): pip install signpeer-softtoken" in out
    assert "curl " not in out
    assert ca.subject == server.issuer


def test_init_refuses_an_existing_home_without_force(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    assert init(home, capsys)[0] == 0
    ca_before = (home / "tls" / "ca.pem").read_bytes()
    db_before = (home / "signpeer.db").read_bytes()
    code, _, err = init(home, capsys)
    assert code == 254 and "--force" in err and "already a signpeer data directory" in err
    assert (home / "tls" / "ca.pem").read_bytes() == ca_before
    assert (home / "signpeer.db").read_bytes() == db_before
    (home / "mine.txt").write_text("keep me")
    code, out, err = init(home, capsys, "--force")
    assert code == 0, err
    assert (home / "tls" / "ca.pem").read_bytes() != ca_before
    assert (home / "mine.txt").read_text() == "keep me"
    with sqlite3.connect(home / "signpeer.db") as db:
        assert db.execute("SELECT COUNT(DISTINCT worker_id) FROM worker_properties").fetchone()[0] == 0


def test_init_uses_signpeer_home(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNPEER_HOME", str(tmp_path / "envhome"))
    assert main(["init"]) == 0
    capsys.readouterr()
    assert (tmp_path / "envhome" / "signpeer.db").exists()
