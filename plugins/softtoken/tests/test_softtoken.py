"""SoftCryptoToken through real Services: SQLite store, Runtime, built-in signers, openssl as the judge."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signpeer_core import devpki
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.errors import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
    SignpeerError,
)
from signpeer_core.keys import is_placeholder
from signpeer_core.plugins import Registry
from signpeer_core.testing import open_store_of
from signpeer_core.workers import SignRequest
from signpeer_softtoken.pkcs12 import load_keystore
from signpeer_softtoken.token import SoftCryptoToken

PASSWORD = "foo123"
CRYPTO = {
    "NAME": "CryptoTokenP12",
    "TYPE": "CRYPTO_WORKER",
    "IMPLEMENTATION_CLASS": "org.signserver.server.signers.CryptoWorker",
    "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "org.signserver.server.cryptotokens.KeystoreCryptoToken",
    "KEYSTORETYPE": "PKCS12",
    "KEYSTOREPATH": "keystore.p12",
    "KEYSTOREPASSWORD": PASSWORD,
}
PLAIN = {
    "NAME": "PlainSigner",
    "TYPE": "PROCESSABLE",
    "IMPLEMENTATION_CLASS": "org.signserver.module.cmssigner.PlainSigner",
    "CRYPTOTOKEN": "CryptoTokenP12",
    "DEFAULTKEY": "signer00001",
}
CMS = {
    "NAME": "CMSSigner",
    "TYPE": "PROCESSABLE",
    "IMPLEMENTATION_CLASS": "org.signserver.module.cmssigner.CMSSigner",
    "CRYPTOTOKEN": "CryptoTokenP12",
    "DEFAULTKEY": "signer00001",
    "DETACHEDSIGNATURE": "FALSE",
}

# Every spelling keys.parse_key_spec accepts, with what the key must turn out to be.
KEY_TYPES = [
    ("RSA", "2048", rsa.RSAPrivateKey, 2048),
    ("RSA", "3072", rsa.RSAPrivateKey, 3072),
    ("RSA", "4096", rsa.RSAPrivateKey, 4096),
    ("RSA", "2048exp65537", rsa.RSAPrivateKey, 2048),
    ("RSA", "2048exp5", rsa.RSAPrivateKey, 2048),
    ("RSA", "2048exp0x10001", rsa.RSAPrivateKey, 2048),
    ("ECDSA", "secp256r1", ec.EllipticCurvePrivateKey, "secp256r1"),
    ("ECDSA", "prime256v1", ec.EllipticCurvePrivateKey, "secp256r1"),
    ("EC", "P-256", ec.EllipticCurvePrivateKey, "secp256r1"),
    ("ECDSA", "secp384r1", ec.EllipticCurvePrivateKey, "secp384r1"),
    ("ECDSA", "P-384", ec.EllipticCurvePrivateKey, "secp384r1"),
    ("ECDSA", "secp521r1", ec.EllipticCurvePrivateKey, "secp521r1"),
    ("ECDSA", "p521", ec.EllipticCurvePrivateKey, "secp521r1"),
    ("Ed25519", "", ed25519.Ed25519PrivateKey, None),
    ("EdDSA", "Ed25519", ed25519.Ed25519PrivateKey, None),
]


def token_of(services, name: str = "CryptoTokenP12") -> SoftCryptoToken:  # type: ignore[no-untyped-def]
    token = services.runtime.get(name).token
    assert isinstance(token, SoftCryptoToken)
    return token


def sign(services, worker: str, data: bytes) -> bytes:  # type: ignore[no-untyped-def]
    return asyncio.run(services.runtime.get(worker).process(SignRequest(data=data, request_id="t1"))).data


def issue_for(token: SoftCryptoToken, alias: str) -> tuple[x509.Certificate, x509.Certificate]:
    """A throwaway CA issues a signer certificate for the token's key."""
    ca_key, ca_cert = devpki.make_ca("CN=Soft Token Test CA, O=signpeer tests, C=SE")
    leaf = devpki.issue(ca_key, ca_cert, f"CN={alias}, O=signpeer tests, C=SE", token.public_key(alias))
    return leaf, ca_cert


def aliases_in_file(run_openssl, path: Path, password: str = PASSWORD) -> list[str]:  # type: ignore[no-untyped-def]
    """The friendlyNames openssl finds on the key bags (so it decrypted every key)."""
    out = run_openssl("pkcs12", "-info", "-in", str(path), "-passin", f"pass:{password}", "-nocerts", "-nodes")
    assert out.returncode == 0, out.stderr
    assert "MAC: sha256" in out.stderr + out.stdout
    names = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if "friendlyName:" in line]
    assert out.stdout.count("BEGIN PRIVATE KEY") == len(names)
    return sorted(names)


# -- registration and configuration --------------------------------------------------------------
def test_registered_under_signserver_names() -> None:
    registry = Registry()
    for name in ("SoftCryptoToken", "KeystoreCryptoToken", "org.signserver.server.cryptotokens.KeystoreCryptoToken"):
        assert registry.token_types.get(name, "CRYPTOTOKEN_IMPLEMENTATION_CLASS") is SoftCryptoToken
    assert registry.infos["softtoken"].distribution == "signpeer-softtoken"


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"KEYSTOREPATH": ""}, "KEYSTOREPATH is not set"),
        ({"KEYSTORETYPE": "JKS"}, "JKS keystores are not supported"),
        ({"KEYSTORETYPE": "PKCS11"}, "KEYSTORETYPE must be PKCS12 or INTERNAL"),
        ({"SELFSIGNED_VALIDITY": "0"}, "SELFSIGNED_VALIDITY"),
        ({"SELFSIGNED_SIGNATUREALGORITHM": "MD5withRSA"}, "unknown signature algorithm"),
        ({"KEYGENERATIONLIMIT": "many"}, "KEYGENERATIONLIMIT must be a whole number"),
    ],
)
def test_bad_configuration_makes_the_worker_offline_with_a_reason(configure, open_services, props, expected) -> None:  # type: ignore[no-untyped-def]
    configure(1, {**CRYPTO, **props})
    status = open_services().runtime.get("CryptoTokenP12").status()
    assert not status.active
    assert any(expected in reason for reason in status.reasons), status.reasons


# -- activation ------------------------------------------------------------------------------------
def test_a_missing_keystore_file_is_an_error_naming_it_and_created_only_when_asked(
        home, configure, open_services, run_openssl, signpeer) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO, create_keystore=False)
    services = open_services()
    token = token_of(services)
    assert not token.is_active and not (home / "keystore.p12").exists()
    reasons = services.runtime.get("CryptoTokenP12").status().reasons
    assert any(str(home / "keystore.p12") in r and "does not exist" in r and "KEYSTOREPATH" in r
               for r in reasons), reasons
    with pytest.raises(ConfigurationError, match="does not exist"):
        token.activate(PASSWORD)
    assert not (home / "keystore.p12").exists()
    # generatekey without -create: the same error, nothing created.
    result = signpeer.in_process("generatekey", "CryptoTokenP12", "-keyalg", "ECDSA", "-keyspec", "P-256", "-alias", "k1")
    assert result.code != 0 and "does not exist" in result.err, result
    assert not (home / "keystore.p12").exists()
    result = signpeer.in_process("generatekey", "CryptoTokenP12", "-create", "-keyalg", "ECDSA", "-keyspec", "P-256",
                          "-alias", "k1")
    assert result.code == 0 and "Created an empty keystore" in result.out, result
    assert aliases_in_file(run_openssl, home / "keystore.p12") == ["k1"]
    # An existing keystore is kept by -create.
    result = signpeer.in_process("generatekey", "CryptoTokenP12", "-create", "-keyalg", "ECDSA", "-keyspec", "P-256",
                          "-alias", "k2")
    assert result.code == 0 and "Created an empty keystore" not in result.out, result
    assert aliases_in_file(run_openssl, home / "keystore.p12") == ["k1", "k2"]


def test_a_keystore_file_gone_while_active_is_not_replaced(home, configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("k1", "ECDSA", "P-256")
    (home / "keystore.p12").rename(home / "moved.p12")  # a volume unmounted under a running server
    with pytest.raises(ConfigurationError, match="does not exist"):
        token.generate_key("k2", "ECDSA", "P-256")
    assert not (home / "keystore.p12").exists()
    assert token.private_key("k1") is not None  # the keys loaded before keep working


def test_auto_activation_of_a_keystore_in_the_data_directory(home, configure, open_services, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    services = open_services()
    token = token_of(services)
    assert token.is_active
    assert services.runtime.get("CryptoTokenP12").status().active
    assert (home / "keystore.p12").exists()  # relative KEYSTOREPATH: in the data directory
    assert aliases_in_file(run_openssl, home / "keystore.p12") == []
    assert (home / "keystore.p12").stat().st_mode & 0o777 == 0o600


def test_manual_activation_and_deactivation(home, configure, open_services) -> None:  # type: ignore[no-untyped-def]
    props = {**CRYPTO}
    del props["KEYSTOREPASSWORD"]
    configure(1, props)
    services = open_services()
    token = token_of(services)
    assert not token.is_active
    reasons = services.runtime.get("CryptoTokenP12").status().reasons
    assert any("signpeer activatecryptotoken CryptoTokenP12" in r for r in reasons), reasons
    with pytest.raises(CryptoTokenOfflineError, match="activatecryptotoken CryptoTokenP12"):
        token.generate_key("k", "ECDSA", "P-256")
    assert not (home / "keystore.p12").exists()

    token.create_keystore("s3cret")  # a keystore that does not exist yet: created (and activated) when asked
    token.generate_key("k", "ECDSA", "P-256")
    token.deactivate()
    assert not token.is_active
    with pytest.raises(CryptoTokenOfflineError):
        token.private_key("k")
    with pytest.raises(CryptoTokenAuthenticationError, match="wrong password"):
        token.activate("not the password")
    assert not token.is_active
    token.activate("s3cret")
    assert token.key_aliases() == ["k"]


def test_wrong_keystorepassword_makes_the_worker_offline_and_says_what_to_do(home, configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token_of(open_services()).generate_key("signer00001", "ECDSA", "P-256")
    before = (home / "keystore.p12").read_bytes()
    configure(1, {"KEYSTOREPASSWORD": "wrong"})
    services = open_services()
    token = token_of(services)
    assert not token.is_active
    reasons = services.runtime.get("CryptoTokenP12").status().reasons
    assert any("KEYSTOREPASSWORD" in r and "wrong password" in r for r in reasons), reasons
    with pytest.raises(CryptoTokenAuthenticationError, match="wrong password"):
        token.activate("still wrong")
    token.activate(PASSWORD)
    assert token.key_aliases() == ["signer00001"]
    assert (home / "keystore.p12").read_bytes() == before  # a failed activation never writes


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_keystore_file_is_named_in_the_error(home, configure, open_services, damage) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token_of(open_services()).generate_key("signer00001", "ECDSA", "P-256")
    path = home / "keystore.p12"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"this is not a keystore\n", "truncated": data[: len(data) // 2], "empty": b""}[damage])
    services = open_services()
    token = token_of(services)
    assert not token.is_active
    reasons = " ".join(services.runtime.get("CryptoTokenP12").status().reasons)
    assert str(path) in reasons and "cannot be read" in reasons
    with pytest.raises(ConfigurationError, match=str(path)):
        token.activate(PASSWORD)


# -- keys --------------------------------------------------------------------------------------------
def test_every_key_type(home, configure, open_services, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    for i, (keyalg, keyspec, kind, size) in enumerate(KEY_TYPES):
        alias = f"key{i}"
        token.generate_key(alias, keyalg, keyspec)
        key = token.private_key(alias)
        assert isinstance(key, kind), (keyalg, keyspec)
        if kind is rsa.RSAPrivateKey:
            assert key.key_size == size
            assert key.public_key().public_numbers().e == (5 if keyspec.endswith("exp5") else 65537)
        elif kind is ec.EllipticCurvePrivateKey:
            assert key.curve.name == size
        chain = token.certificate_chain(alias)
        assert len(chain) == 1 and is_placeholder(chain[0])
        assert chain[0].subject.rfc4514_string() == f"CN={alias},L=_SignServer_DUMMY_CERT_,C=SE"
        chain[0].verify_directly_issued_by(chain[0])  # self-signed by the new key
    expected = sorted(f"key{i}" for i in range(len(KEY_TYPES)))
    assert token.key_aliases() == expected
    assert aliases_in_file(run_openssl, home / "keystore.p12") == expected
    # A fresh process decrypts the same keys.
    infos = {info.alias: info.description for info in token_of(open_services()).key_infos()}
    assert infos["key2"] == "RSA 4096" and infos["key11"] == "EC secp521r1" and infos["key13"] == "Ed25519"


@pytest.mark.parametrize(("keyalg", "keyspec"), [("RSA", "1000"), ("RSA", "2048exp4"), ("ECDSA", "secp256k1"), ("DSA", "1024")])
def test_bad_key_spec_is_a_bad_request(configure, open_services, keyalg, keyspec) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    with pytest.raises(BadRequestError):
        token.generate_key("k", keyalg, keyspec)
    assert token.key_aliases() == []


def test_alias_taken_is_a_conflict_and_changes_nothing(home, configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("signer00001", "ECDSA", "P-256")
    key = token.private_key("signer00001")
    before = (home / "keystore.p12").read_bytes()
    with pytest.raises(ConflictError, match="already has a key 'signer00001'"):
        token.generate_key("signer00001", "RSA", "2048")
    assert token.private_key("signer00001") is key
    assert (home / "keystore.p12").read_bytes() == before


def test_alias_taken_by_another_process_is_a_conflict(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    server, cli = token_of(open_services()), token_of(open_services())
    cli.generate_key("signer00002", "ECDSA", "P-256")
    with pytest.raises(ConflictError):
        server.generate_key("signer00002", "ECDSA", "P-256")  # the server re-reads before writing


def test_remove_key(home, configure, open_services, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("a", "ECDSA", "P-256")
    token.generate_key("b", "Ed25519", "")
    with pytest.raises(KeyNotFoundError, match="no key 'missing' to remove"):
        token.remove_key("missing")
    token.remove_key("a")
    assert token.key_aliases() == ["b"]
    with pytest.raises(KeyNotFoundError, match="signpeer generatekey CryptoTokenP12 -alias a"):
        token.private_key("a")
    assert aliases_in_file(run_openssl, home / "keystore.p12") == ["b"]


def test_key_generation_limit_and_selfsigned_properties(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, {**CRYPTO, "KEYGENERATIONLIMIT": "2", "SELFSIGNED_DN": "CN=Placeholder,O=Example,C=SE",
                  "SELFSIGNED_VALIDITY": "10", "SELFSIGNED_SIGNATUREALGORITHM": "SHA384withECDSA"})
    token = token_of(open_services())
    token.generate_key("a", "ECDSA", "P-384")
    cert = token.certificate_chain("a")[0]
    assert cert.subject.rfc4514_string() == "CN=Placeholder,O=Example,C=SE"
    assert cert.signature_hash_algorithm.name == "sha384"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 10 * 86400 <= lifetime.total_seconds() <= 10 * 86400 + 3600  # 10 days (+ the 10 minutes backdating)
    token.generate_key("b", "ECDSA", "P-256")
    with pytest.raises(ConflictError, match="KEYGENERATIONLIMIT"):
        token.generate_key("c", "ECDSA", "P-256")
    token.remove_key("b")
    with pytest.raises(ConfigurationError, match="does not fit"):  # SHA384withECDSA cannot self-sign an RSA key
        token.generate_key("r", "RSA", "2048")
    assert token.key_aliases() == ["a"]


# -- certificates and signing -------------------------------------------------------------------------
def test_import_certificate_chain_checks_the_key(home, configure, open_services, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("a", "ECDSA", "P-256")
    token.generate_key("b", "ECDSA", "P-256")
    leaf_a, ca = issue_for(token, "a")
    before = (home / "keystore.p12").read_bytes()
    with pytest.raises(ConflictError, match="does not match key 'b'"):
        token.import_certificate_chain("b", [leaf_a, ca])
    with pytest.raises(KeyNotFoundError):
        token.import_certificate_chain("nokey", [leaf_a, ca])
    with pytest.raises(BadRequestError, match="leaf first"):
        token.import_certificate_chain("a", [ca, leaf_a])
    assert (home / "keystore.p12").read_bytes() == before
    assert is_placeholder(token.certificate_chain("b")[0])

    token.import_certificate_chain("a", [leaf_a, ca])
    assert token.certificate_chain("a") == [leaf_a, ca]
    assert token_of(open_services()).certificate_chain("a") == [leaf_a, ca]  # persisted, chain order kept
    info = run_openssl("pkcs12", "-info", "-in", str(home / "keystore.p12"), "-passin", f"pass:{PASSWORD}", "-nokeys")
    assert info.returncode == 0, info.stderr
    assert "subject=C = SE, O = signpeer tests, CN = a" in info.stdout
    assert "subject=C = SE, O = signpeer tests, CN = Soft Token Test CA" in info.stdout


@pytest.mark.parametrize(("keyalg", "keyspec"), [("ECDSA", "secp256r1"), ("RSA", "2048"), ("Ed25519", "")])
def test_plainsigner_signs_with_the_token_and_openssl_verifies(tmp_path, configure, open_services, run_openssl, keyalg, keyspec) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    configure(2, PLAIN)
    services = open_services()
    token = token_of(services)
    token.generate_key("signer00001", keyalg, keyspec)
    services.runtime.load()
    status = services.runtime.get("PlainSigner").status()
    assert not status.active and any("no signer certificate" in r for r in status.reasons), status.reasons

    leaf, ca = issue_for(token, "signer00001")
    token.import_certificate_chain("signer00001", [leaf, ca])
    services.runtime.load()
    assert services.runtime.get("PlainSigner").status().active, services.runtime.get("PlainSigner").status().reasons

    data = b"signpeer soft token test data\n"
    signature = sign(services, "PlainSigner", data)
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "sig.bin").write_bytes(signature)
    (tmp_path / "pub.pem").write_bytes(leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    if keyalg == "Ed25519":
        out = run_openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"), "-rawin",
                          "-in", str(tmp_path / "data.bin"), "-sigfile", str(tmp_path / "sig.bin"))
        assert "Signature Verified Successfully" in out.stdout, out.stdout + out.stderr
    else:
        out = run_openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                          "-signature", str(tmp_path / "sig.bin"), str(tmp_path / "data.bin"))
        assert out.stdout.strip() == "Verified OK", out.stdout + out.stderr
    # openssl rejects the signature over other data: the check above can fail.
    (tmp_path / "data.bin").write_bytes(data + b"x")
    if keyalg != "Ed25519":
        out = run_openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                          "-signature", str(tmp_path / "sig.bin"), str(tmp_path / "data.bin"))
        assert out.returncode != 0


def test_cmssigner_with_certificate_in_the_configuration(tmp_path, configure, open_services, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    configure(3, CMS)
    services = open_services()
    token = token_of(services)
    token.generate_key("signer00001", "RSA", "3072")
    leaf, ca = issue_for(token, "signer00001")
    configure(3, {"SIGNERCERT": encode_certificate_property([leaf]),
                  "SIGNERCERTCHAIN": encode_certificate_property([leaf, ca])})
    services.runtime.load()
    assert services.runtime.get("CMSSigner").status().active, services.runtime.get("CMSSigner").status().reasons
    data = b"content signed as CMS\n"
    (tmp_path / "out.p7s").write_bytes(sign(services, "CMSSigner", data))
    (tmp_path / "ca.pem").write_bytes(devpki.cert_pem(ca))
    out = run_openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "out.p7s"), "-binary",
                      "-CAfile", str(tmp_path / "ca.pem"), "-out", str(tmp_path / "content.bin"))
    assert out.returncode == 0 and "Verification successful" in out.stderr, out.stderr
    assert (tmp_path / "content.bin").read_bytes() == data


def test_signer_offline_while_token_not_activated(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    configure(2, PLAIN)
    token = token_of(open_services())
    token.generate_key("signer00001", "ECDSA", "P-256")
    leaf, ca = issue_for(token, "signer00001")
    token.import_certificate_chain("signer00001", [leaf, ca])
    configure(1, {}, remove=("KEYSTOREPASSWORD",))
    services = open_services()
    with pytest.raises(CryptoTokenOfflineError, match="activatecryptotoken CryptoTokenP12"):
        sign(services, "PlainSigner", b"data")
    token_of(services).activate(PASSWORD)
    services.runtime.load()
    assert len(sign(services, "PlainSigner", b"data")) > 0


# -- reload and several processes -------------------------------------------------------------------
def test_reload_keeps_the_token_and_its_activation(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    props = {**CRYPTO}
    del props["KEYSTOREPASSWORD"]
    configure(1, props)
    configure(2, PLAIN)
    services = open_services()
    token = token_of(services)
    token.create_keystore(PASSWORD)
    token.generate_key("signer00001", "ECDSA", "P-256")
    services.runtime.load()
    assert token_of(services) is token and token.is_active
    assert services.runtime.get("PlainSigner").token is token
    # A property the token does not read (here on the crypto worker itself) keeps it too.
    configure(1, {"DEFAULTKEY": "signer00001"})
    services.runtime.load()
    assert token_of(services) is token and token.is_active
    # A token property makes a new, not yet activated, token.
    configure(1, {"KEYSTOREPATH": "other.p12"})
    services.runtime.load()
    assert token_of(services) is not token and not token_of(services).is_active


def test_keys_generated_by_another_process_are_visible(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    server_services = open_services()
    server = token_of(server_services)
    server.generate_key("server1", "ECDSA", "P-256")
    cli = token_of(open_services())  # e.g. `signpeer generatekey` in another process
    cli.generate_key("cli1", "ECDSA", "P-256")
    assert server.private_key("cli1") is not None  # a file token looks again when a key is missing
    server.generate_key("server2", "ECDSA", "P-256")  # must not drop cli1
    cli.remove_key("server1")
    server_services.runtime.load()  # reload re-reads the keystore
    assert token_of(server_services).key_aliases() == ["cli1", "server2"]
    assert token_of(open_services()).key_aliases() == ["cli1", "server2"]


def test_concurrent_processes_never_lose_a_key(home, configure, run_openssl) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    script = textwrap.dedent(f"""
        import sys
        from signpeer_core.services import Services
        from signpeer_core.settings import load_settings
        services = Services.open(load_settings({str(home)!r}))
        token = services.runtime.get("CryptoTokenP12").token
        for i in range(6):
            token.generate_key(f"{{sys.argv[1]}}-{{i}}", "ECDSA", "P-256")
        services.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stderr=subprocess.PIPE) for name in "abc"]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    expected = sorted(f"{p}-{i}" for p in "abc" for i in range(6))
    assert aliases_in_file(run_openssl, home / "keystore.p12") == expected
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]


# -- atomic writes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_write_leaves_the_old_keystore_intact(home, configure, open_services, monkeypatch, failing) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("old", "ECDSA", "P-256")
    path = home / "keystore.p12"
    before = path.read_bytes()

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class HalfWritten:
            """A file that takes half the bytes and then fails, like a full disk or a crash."""

            def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                self.f = real_fdopen(*args, **kwargs)

            def __enter__(self):  # type: ignore[no-untyped-def]
                return self

            def __exit__(self, *exc):  # type: ignore[no-untyped-def]
                self.f.close()

            def write(self, data: bytes) -> None:
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                boom()

        monkeypatch.setattr(os, "fdopen", HalfWritten)
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(SignpeerError, match="could not write .*No space left on device.*unchanged"):
        token.generate_key("new", "ECDSA", "P-256")
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    assert token.key_aliases() == ["old"]  # memory follows the file, not the failed change
    assert token_of(open_services()).key_aliases() == ["old"]
    token.generate_key("new", "ECDSA", "P-256")
    assert token_of(open_services()).key_aliases() == ["new", "old"]


# -- INTERNAL: the keystore in the database ---------------------------------------------------------
def test_internal_keystore_survives_reopening_and_is_shared(home, configure, open_services, run_openssl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    props = {**CRYPTO, "KEYSTORETYPE": "INTERNAL"}
    del props["KEYSTOREPATH"]
    configure(1, props)
    configure(2, PLAIN)
    services = open_services()
    token = token_of(services)
    token.generate_key("signer00001", "ECDSA", "P-384")
    leaf, ca = issue_for(token, "signer00001")
    token.import_certificate_chain("signer00001", [leaf, ca])
    other = token_of(open_services())
    other.generate_key("second", "Ed25519", "")
    token.generate_key("third", "RSA", "2048")  # re-reads the database first: "second" stays
    services.close()
    assert not list(home.glob("*.p12"))

    store = open_store_of(home)
    blob = store.keystore(1)
    store.close()
    assert blob is not None
    assert sorted(load_keystore(blob, PASSWORD).entries) == ["second", "signer00001", "third"]
    (tmp_path / "internal.p12").write_bytes(blob)
    assert aliases_in_file(run_openssl, tmp_path / "internal.p12") == ["second", "signer00001", "third"]

    reopened = open_services()
    assert token_of(reopened).key_aliases() == ["second", "signer00001", "third"]
    assert token_of(reopened).certificate_chain("signer00001") == [leaf, ca]
    assert reopened.runtime.get("PlainSigner").status().active
    assert len(sign(reopened, "PlainSigner", b"data")) > 0


def test_internal_keystore_wrong_password(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    props = {**CRYPTO, "KEYSTORETYPE": "INTERNAL"}
    del props["KEYSTOREPATH"]
    configure(1, props)
    token_of(open_services()).generate_key("k", "ECDSA", "P-256")
    configure(1, {"KEYSTOREPASSWORD": "wrong"})
    services = open_services()
    assert not token_of(services).is_active
    reasons = " ".join(services.runtime.get("CryptoTokenP12").status().reasons)
    assert "INTERNAL keystore of worker 1" in reasons and "wrong password" in reasons


def test_alias_differing_only_in_case_is_taken(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("Signer1", "ECDSA", "P-256")
    with pytest.raises(ConflictError):
        token.generate_key("signer1", "ECDSA", "P-256")


# -- the README ---------------------------------------------------------------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_property() -> None:
    text = README.read_text()
    for prop in SoftCryptoToken.properties:
        assert f"| `{prop.name}` |" in text, prop.name


def test_readme_property_file_gives_working_signers(home, open_services, run_openssl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.propertyfile import apply_property_text
    from signpeer_core.storage import Admin

    example = README.read_text().split("```properties\n", 1)[1].split("```", 1)[0]
    services = open_services()
    admin = WorkerAdmin(services, Admin("readme test"))
    apply_property_text(admin, example)
    services.runtime.load()
    assert admin.create_keystore("CryptoTokenP12")  # what generatekey -create does first
    assert admin.generate_key("CryptoTokenP12", "signer00001", "ECDSA", "secp256r1") == "signer00001"
    token = token_of(services)
    leaf, ca = issue_for(token, "signer00001")
    token.import_certificate_chain("signer00001", [leaf, ca])
    services.runtime.load()
    for name in ("CMSSigner", "PlainSigner"):
        assert services.runtime.get(name).status().active, services.runtime.get(name).status().reasons
    assert aliases_in_file(run_openssl, home / "keystores" / "CryptoTokenP12.p12") == ["signer00001"]
    (tmp_path / "out.p7s").write_bytes(sign(services, "CMSSigner", b"readme"))
    (tmp_path / "ca.pem").write_bytes(devpki.cert_pem(ca))
    out = run_openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "out.p7s"), "-binary",
                      "-CAfile", str(tmp_path / "ca.pem"))
    assert out.returncode == 0 and out.stdout == "readme", out.stderr


# -- the hot path -------------------------------------------------------------------------------------
def test_private_key_touches_neither_file_nor_database(configure, open_services, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    configure(1, CRYPTO)
    services = open_services()
    token = token_of(services)
    token.generate_key("k", "ECDSA", "P-256")

    def forbidden(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the signing hot path read the keystore")

    monkeypatch.setattr(os, "stat", forbidden)
    monkeypatch.setattr(Path, "read_bytes", forbidden)
    monkeypatch.setattr(services.store, "keystore", forbidden)
    assert token.private_key("k") is token.private_key("k")


def test_signing_threads_while_keys_change(configure, open_services) -> None:  # type: ignore[no-untyped-def]
    import threading

    from signpeer_core.keys import sign as raw_sign
    from signpeer_core.keys import signature_algorithm, verify

    configure(1, CRYPTO)
    token = token_of(open_services())
    token.generate_key("stable", "ECDSA", "P-256")
    alg = signature_algorithm("SHA256withECDSA")
    errors: list[BaseException] = []
    stop = threading.Event()

    def signer() -> None:
        try:
            while not stop.is_set():
                key = token.private_key("stable")
                verify(key.public_key(), alg, raw_sign(key, alg, b"x"), b"x")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=signer) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(5):
        token.generate_key(f"tmp{i}", "ECDSA", "P-256")
        token.remove_key(f"tmp{i}")
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert token.key_aliases() == ["stable"]


def test_a_new_keystore_needs_a_password(home, configure, open_services) -> None:  # type: ignore[no-untyped-def]
    props = {**CRYPTO}
    del props["KEYSTOREPASSWORD"]
    configure(1, props)
    token = token_of(open_services())
    with pytest.raises(BadRequestError, match="give the password"):
        token.create_keystore("")
    assert not token.is_active and not (home / "keystore.p12").exists()
