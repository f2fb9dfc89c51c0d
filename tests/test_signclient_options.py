"""``signpeer signdocument`` with SignServer signclient's options: ``-protocol HTTP|REST``,
``-truststore``/``-keystore`` as JKS (written with pyjks), PKCS#12 and PEM, batch mode
``-indir``/``-outdir``. One server for the module; results verified by openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jks
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from signpeer_core.testing import PKI, ServerProcess, add_signer, open_services, run_signpeer, write_home
from signpeer_core.testing.fixtures import CliRunner

CA_SUBJECT = "CN=signpeer test CA, O=signpeer tests"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Any:
    home = write_home(tmp_path_factory.mktemp("signclient") / "home", pki)
    services = open_services(home)
    try:
        add_signer(services, pki, "CMSSigner", implementation="CMSSigner", AUTHTYPE="NOAUTH")
        add_signer(services, pki, "CertSigner", implementation="CMSSigner", AUTHTYPE="CLIENTCERT")
    finally:
        services.close()
    r = run_signpeer(home, "authorizedclients", "-worker", "CertSigner", "-add", "-matchSubjectWithType",
                     "SUBJECT_RDN_CN", "-matchSubjectWithValue", "client1", "-matchIssuerWithValue", CA_SUBJECT)
    assert r.returncode == 0, r.stderr
    server = ServerProcess(home, (), None).start()
    yield home, server
    server.stop()


def _der(cert: Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _jks_truststore(pki: PKI, path: Path, password: str = "changeit") -> Path:
    jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("ca", _der(pki.ca_cert))]).save(str(path), password)
    return path


def _jks_keystore(pki: PKI, path: Path, password: str = "foo123") -> Path:
    key = serialization.load_pem_private_key(Path(pki.client.key_pem).read_bytes(), None)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    entry = jks.PrivateKeyEntry.new("client1", [_der(pki.client.cert), _der(pki.ca_cert)], pkcs8)
    jks.KeyStore.new("jks", [entry]).save(str(path), password)
    return path


def _p12_keystore(pki: PKI, path: Path, password: str = "foo123") -> Path:
    key = serialization.load_pem_private_key(Path(pki.client.key_pem).read_bytes(), None)
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"client1", key, pki.client.cert, [pki.ca_cert],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password.encode())))
    return path


def _cms_verifies(pki: PKI, signed: bytes, content: bytes, tmp: Path) -> bool:
    (tmp / "v.p7s").write_bytes(signed)
    v = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in",
                        str(tmp / "v.p7s")], capture_output=True)
    return v.returncode == 0 and v.stdout == content


@pytest.mark.parametrize("protocol", ["REST", "HTTP", "http"])
def test_protocols_sign_the_same(served: Any, pki: PKI, tmp_path: Path, protocol: str) -> None:
    home, _ = served
    r = run_signpeer(home, "signdocument", "-workername", "CMSSigner", "-data", "over " + protocol,
                     "-protocol", protocol)
    assert r.returncode == 0, r.stderr
    assert _cms_verifies(pki, r.stdout, f"over {protocol}".encode(), tmp_path)


def test_soap_protocols_are_refused_with_what_to_use(served: Any) -> None:
    home, _ = served
    r = run_signpeer(home, "signdocument", "-workername", "CMSSigner", "-data", "x", "-protocol", "CLIENTWS")
    assert r.returncode == 255 and b"use -protocol HTTP or REST" in r.stderr


@pytest.mark.parametrize("kind", ["JKS", "PKCS12"])
def test_truststore_and_keystore_files_authenticate_the_client(served: Any, pki: PKI, tmp_path: Path,
                                                               kind: str) -> None:
    home, _ = served
    cli = CliRunner(home)  # in this process: the options are parsed and the files read as in a subprocess
    trust = _jks_truststore(pki, tmp_path / "truststore.jks")
    keystore = (_jks_keystore if kind == "JKS" else _p12_keystore)(pki, tmp_path / f"client.{kind.lower()}")
    for protocol in ("REST", "HTTP"):
        out = tmp_path / f"{protocol}.p7s"
        r = cli.in_process("signdocument", "-workername", "CertSigner", "-data", "mutual TLS", "-outfile", str(out),
                           "-truststore", str(trust), "-truststorepwd", "changeit", "-keystore", str(keystore),
                           "-keystorepwd", "foo123", "-keyalias", "client1", "-protocol", protocol)
        assert r.code == 0, r.err
        assert _cms_verifies(pki, out.read_bytes(), b"mutual TLS", tmp_path)
    # A wrong password, a missing one and a missing alias are named.
    wrong = cli.in_process("signdocument", "-workername", "CMSSigner", "-data", "x", "-keystore", str(keystore),
                           "-keystorepwd", "nope")
    assert wrong.code == 254 and "-keystorepwd" in wrong.err
    missing = cli.in_process("signdocument", "-workername", "CMSSigner", "-data", "x", "-truststore", str(trust))
    assert missing.code == 254 and "Missing -truststorepwd" in missing.err
    alias = cli.in_process("signdocument", "-workername", "CMSSigner", "-data", "x", "-keystore", str(keystore),
                           "-keystorepwd", "foo123", "-keyalias", "other")
    assert alias.code == 254 and "has no key 'other'" in alias.err


def test_without_the_keystore_the_clientcert_worker_refuses(served: Any, pki: PKI, tmp_path: Path) -> None:
    home, _ = served
    trust = _jks_truststore(pki, tmp_path / "truststore.jks")
    r = CliRunner(home).in_process("signdocument", "-workername", "CertSigner", "-data", "x", "-truststore",
                                   str(trust), "-truststorepwd", "changeit")
    assert r.code == 254 and "requires a TLS client certificate" in r.err


def test_a_truststore_without_the_servers_ca_fails_the_handshake(served: Any, tmp_path: Path,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    from signpeer_core.testing import make_pki

    home, _ = served
    other = make_pki(tmp_path_factory.mktemp("otherpki"))
    trust = _jks_truststore(other, tmp_path / "other.jks")
    r = CliRunner(home).in_process("signdocument", "-workername", "CMSSigner", "-data", "x", "-truststore",
                                   str(trust), "-truststorepwd", "changeit")
    assert r.code == 254 and "not trusted" in r.err and "-truststore" in r.err


def test_the_key_never_reaches_the_disk_in_clear(pki: PKI, tmp_path: Path) -> None:
    from signpeer_core.clientstores import client_tls_files

    keystore = _jks_keystore(pki, tmp_path / "client.jks")
    files = client_tls_files(tmp_path / "tls", None, None, str(keystore), "foo123")
    assert files.key is not None and files.key_password
    assert b"ENCRYPTED PRIVATE KEY" in files.key.read_bytes() and (files.key.stat().st_mode & 0o777) == 0o600
    key = serialization.load_pem_private_key(files.key.read_bytes(), files.key_password.encode())
    assert key.public_key() == pki.client.cert.public_key()


def test_batch_mode_signs_every_file_into_outdir(served: Any, pki: PKI, tmp_path: Path) -> None:
    home, _ = served
    indir, outdir = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    documents = {f"doc{i}.txt": f"document {i}".encode() for i in range(5)}
    for name, content in documents.items():
        (indir / name).write_bytes(content)
    r = run_signpeer(home, "signdocument", "-workername", "CMSSigner", "-indir", str(indir), "-outdir", str(outdir),
                     "-threads", "3", "-removefromindir", "-protocol", "HTTP")
    assert r.returncode == 0, r.stderr
    assert b"Signed 5 of 5 file(s)" in r.stdout
    assert sorted(p.name for p in outdir.iterdir()) == sorted(documents) and not any(indir.iterdir())
    for name, content in documents.items():
        assert _cms_verifies(pki, (outdir / name).read_bytes(), content, tmp_path)

    # A failing worker: each file is named, none is removed, exit 254.
    (indir / "a.txt").write_bytes(b"a")
    failed = run_signpeer(home, "signdocument", "-workername", "NoSuchWorker", "-indir", str(indir),
                          "-outdir", str(tmp_path / "out2"), "-removefromindir")
    assert failed.returncode == 254 and b"Failure for a.txt:" in failed.stderr
    assert (indir / "a.txt").exists() and not any((tmp_path / "out2").iterdir())
    usage = run_signpeer(home, "signdocument", "-workername", "CMSSigner", "-indir", str(indir))
    assert usage.returncode == 254 and b"-indir needs -outdir" in usage.stderr


def test_the_cli_md_signdocument_examples_work(served: Any, pki: PKI, tmp_path: Path, monkeypatch: Any) -> None:
    import re
    import shlex

    home, _ = served
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    body = text.split("### signdocument\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(signpeer .*?)```", body, flags=re.S)[0].replace("\\\n", " ")
    monkeypatch.chdir(tmp_path)
    _jks_truststore(pki, tmp_path / "truststore.jks")
    _p12_keystore(pki, tmp_path / "client.p12")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_bytes(b"batch example")
    for line in block.splitlines():
        r = CliRunner(home).in_process(*shlex.split(line)[1:])
        assert r.code == 0, (line, r.err)
    assert _cms_verifies(pki, (tmp_path / "signed.p7s").read_bytes(), b"Hello", tmp_path)
    assert _cms_verifies(pki, (tmp_path / "out" / "a.txt").read_bytes(), b"batch example", tmp_path)
