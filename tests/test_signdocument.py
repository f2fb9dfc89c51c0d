"""``signpeer signdocument`` end to end against a running server; results verified by openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from signpeer_core.testing import PKI, add_signer, run_signpeer


@pytest.fixture
def server(signpeer_home: Path, services, pki: PKI, start_server):
    add_signer(services, pki, "CMSSigner", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "PlainSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "UserSigner", AUTHTYPE="USERNAME", ACCEPT_USERNAMES="alice")
    add_signer(services, pki, "CertSigner", AUTHTYPE="CLIENTCERT")
    add_signer(services, pki, "HashSigner", implementation="CMSSigner", AUTHTYPE="NOAUTH", DETACHEDSIGNATURE="true",
               CLIENTSIDEHASHING="true", ACCEPTED_HASH_DIGEST_ALGORITHMS="SHA-256,SHA-384")
    r = run_signpeer(signpeer_home, "authorizedclients", "-worker", "CertSigner", "-add", "-matchSubjectWithType",
                     "SUBJECT_RDN_CN", "-matchSubjectWithValue", "client1", "-matchIssuerWithValue",
                     "CN=signpeer test CA, O=signpeer tests")
    assert r.returncode == 0, r.stderr
    return start_server(signpeer_home)


def test_cms_to_outfile_verifies(server, signpeer_home: Path, pki: PKI, tmp_path: Path) -> None:
    out = tmp_path / "signed.p7s"
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "CMSSigner", "-data", "hello signpeer",
                     "-outfile", str(out), "-metadata", "k1=v1", "-metadata", "k2=a=b")
    assert r.returncode == 0, r.stderr
    v = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(out)],
                       capture_output=True)
    assert v.returncode == 0 and v.stdout == b"hello signpeer", v.stderr


def test_infile_to_stdout_with_explicit_host_port(server, signpeer_home: Path, pki: PKI, tmp_path: Path) -> None:
    data = tmp_path / "in.bin"
    data.write_bytes(bytes(range(256)))
    r = run_signpeer(signpeer_home, "signdocument", "-workerid", "2", "-infile", str(data), "-host", "127.0.0.1",
                     "-port", str(server.port), "--cacert", str(pki.ca_pem))
    assert r.returncode == 0, r.stderr
    (tmp_path / "sig").write_bytes(r.stdout)
    from cryptography.hazmat.primitives import serialization

    from signpeer_core.testing import open_services

    s = open_services(signpeer_home)
    pub = s.runtime.get("PlainSigner").chain[0].public_key()
    s.close()
    (tmp_path / "pub.pem").write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                        str(tmp_path / "sig"), str(data)], capture_output=True)
    assert v.returncode == 0, v.stdout + v.stderr


def test_stdin_input(server, signpeer_home: Path) -> None:
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "PlainSigner", "-infile", "-", input=b"from stdin")
    assert r.returncode == 0 and len(r.stdout) > 60, r.stderr


def test_username_and_client_certificate(server, signpeer_home: Path, pki: PKI) -> None:
    denied = run_signpeer(signpeer_home, "signdocument", "-workername", "UserSigner", "-data", "x")
    assert denied.returncode != 0 and b"HTTP 401" in denied.stderr
    ok = run_signpeer(signpeer_home, "signdocument", "-workername", "UserSigner", "-data", "x",
                      "-username", "alice", "-password", "")
    assert ok.returncode == 0, ok.stderr
    nocert = run_signpeer(signpeer_home, "signdocument", "-workername", "CertSigner", "-data", "x")
    assert nocert.returncode != 0 and b"client certificate" in nocert.stderr
    ok = run_signpeer(signpeer_home, "signdocument", "-workername", "CertSigner", "-data", "x",
                      "--cert", str(pki.client.pem), "--key", str(pki.client.key_pem))
    assert ok.returncode == 0, ok.stderr


def test_errors_print_the_server_message(server, signpeer_home: Path, tmp_path: Path) -> None:
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "Nope", "-data", "x")
    assert r.returncode != 0 and b"no worker 'Nope'" in r.stderr and b"HTTP 404" in r.stderr
    assert r.stdout == b""
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "PlainSigner", "-infile", str(tmp_path / "none"))
    assert r.returncode != 0 and b"cannot read -infile" in r.stderr
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "PlainSigner", "-data", "x", "-metadata", "novalue")
    assert r.returncode != 0 and b"KEY=VALUE" in r.stderr
    r = run_signpeer(signpeer_home, "signdocument", "-data", "x")
    assert r.returncode == 255  # argparse: a worker is required


def test_untrusted_server_and_no_server(server, signpeer_home: Path, tmp_path: Path) -> None:
    from signpeer_core.testing import make_pki

    other = make_pki(tmp_path / "other")
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "PlainSigner", "-data", "x",
                     "--cacert", str(other.ca_pem))
    assert r.returncode != 0 and b"cannot connect" in r.stderr and b"--cacert" in r.stderr
    server.stop()
    r = run_signpeer(signpeer_home, "signdocument", "-workername", "PlainSigner", "-data", "x",
                     "-port", str(server.port))
    assert r.returncode != 0 and b"cannot connect" in r.stderr and b"Traceback" not in r.stderr


def test_clientside_hashes_the_file_as_it_reads_it_and_openssl_verifies_the_detached_signature(
        server, signpeer_home: Path, pki: PKI, tmp_path: Path) -> None:
    document = tmp_path / "document.bin"
    document.write_bytes(bytes(range(256)) * 20_000)  # 5 MB, read a MiB at a time
    for algorithm in ("SHA-256", "SHA-384"):
        out = tmp_path / f"signed-{algorithm}.p7s"
        r = run_signpeer(signpeer_home, "signdocument", "-workername", "HashSigner", "-infile", str(document),
                         "-clientside", "-digestalgorithm", algorithm, "-outfile", str(out))
        assert r.returncode == 0, r.stderr
        v = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(pki.ca_pem), "-inform", "DER", "-in", str(out),
                            "-binary", "-content", str(document), "-out", "/dev/null"], capture_output=True)
        assert v.returncode == 0, v.stderr
    refused = run_signpeer(signpeer_home, "signdocument", "-workername", "HashSigner", "-data", "x", "-clientside",
                           "-digestalgorithm", "SHA-512")  # not in the worker's ACCEPTED_HASH_DIGEST_ALGORITHMS
    assert refused.returncode != 0 and b"SHA-512" in refused.stderr
    bad = run_signpeer(signpeer_home, "signdocument", "-workername", "HashSigner", "-data", "x", "-clientside",
                       "-digestalgorithm", "MD5")
    assert bad.returncode != 0 and b"-digestalgorithm 'MD5' is not one of" in bad.stderr
