"""Through signpeer's Runtime: PlainSigner and CMSSigner sign with a key in SoftHSM2 (checked by
openssl), and broken PKCS#11 workers go OFFLINE with reasons while the others keep working."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import signpeer_pkcs11token.plugin
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.workers import SignRequest

P11 = "org.signserver.server.cryptotokens.PKCS11CryptoToken"


def registry() -> Registry:
    # Only core and this plugin: other plugins in the checkout are not this test's business.
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(signpeer_pkcs11token.plugin, name="pkcs11token")
    return Registry(pm)


def open_services(home) -> Services:
    return Services.open(load_settings(home), registry=registry())


def crypto_worker(hsm, name: str, **extra: str) -> dict[str, str]:
    return {"NAME": name, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "org.signserver.server.signers.CryptoWorker",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": P11, **hsm.props(**extra)}


def throwaway_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Throwaway CA,O=signpeer tests")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, public, cn: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={cn}"))
            .issuer_name(ca_cert.subject).public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=10))
            .sign(ca_key, hashes.SHA256()))


def process(worker, data: bytes):
    return asyncio.run(worker.process(SignRequest(data=data, request_id="r1")))


@pytest.mark.parametrize(("keyalg", "keyspec"), [("ECDSA", "secp256r1"), ("RSA", "2048")])
def test_plain_and_cms_signers_with_an_hsm_key(hsm, tmp_path, alias, keyalg, keyspec):
    store_home = tmp_path / "home"
    services = open_services(store_home)
    store = services.store
    store.update_worker(1, crypto_worker(hsm, "CryptoTokenP11"))
    for wid, impl in ((2, "org.signserver.module.cmssigner.PlainSigner"), (3, "org.signserver.module.cmssigner.CMSSigner")):
        store.update_worker(wid, {"NAME": f"Signer{wid}", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": impl,
                                  "CRYPTOTOKEN": "CryptoTokenP11", "DEFAULTKEY": alias})
    services.runtime.load()
    token = services.runtime.get("CryptoTokenP11").crypto_token()
    assert token.is_active
    token.generate_key(alias, keyalg, keyspec)
    signer = services.runtime.get("Signer2")
    # A status read never asks the HSM: it reports what the last look-up found (no key at load)
    # and looks again in a thread; a later read sees the new key and the missing certificate.
    deadline = time.monotonic() + 30
    while not any("no signer certificate" in r for r in signer.status().reasons) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any("no signer certificate" in r for r in signer.status().reasons), signer.status().reasons
    ca_key, ca_cert = throwaway_ca()
    cert = issue(ca_key, ca_cert, token.public_key(alias), "HSM signer")
    chain = encode_certificate_property([cert, ca_cert])
    for wid in (2, 3):
        store.update_worker(wid, {"SIGNERCERTCHAIN": chain})
    services.close()

    services = open_services(store_home)  # a fresh process view: the token auto-activates from PIN
    try:
        plain, cms = services.runtime.get("Signer2"), services.runtime.get("Signer3")
        assert plain.status().active, plain.status().reasons
        assert cms.status().active, cms.status().reasons
        data = b"document to sign\n" * 50
        (tmp_path / "data.bin").write_bytes(data)
        (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        subprocess.run(["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-pubkey", "-noout", "-out",
                        str(tmp_path / "pub.pem")], check=True)

        (tmp_path / "sig.bin").write_bytes(process(plain, data).data)
        out = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                              str(tmp_path / "sig.bin"), str(tmp_path / "data.bin")], capture_output=True, text=True)
        assert out.returncode == 0 and "Verified OK" in out.stdout, out.stdout + out.stderr

        (tmp_path / "signed.der").write_bytes(process(cms, data).data)
        out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "signed.der"),
                              "-CAfile", str(tmp_path / "ca.pem"), "-out", str(tmp_path / "content.bin")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "content.bin").read_bytes() == data

        # importcertificatechain also stores the chain in the token
        token = services.runtime.get("CryptoTokenP11").crypto_token()
        token.import_certificate_chain(alias, [cert, ca_cert])
        assert token.certificate_chain(alias) == [cert, ca_cert]
        token.remove_key(alias)
        assert alias not in token.key_aliases()
    finally:
        services.close()


def test_broken_pkcs11_workers_are_offline_and_others_serve(hsm, tmp_path, alias):
    services = open_services(tmp_path)
    store = services.store
    store.update_worker(1, crypto_worker(hsm, "GoodToken"))
    store.update_worker(2, crypto_worker(hsm, "WrongPin", PIN="9999"))
    store.update_worker(3, crypto_worker(hsm, "NoSlot", SLOTLABELVALUE="missing-token"))
    store.update_worker(4, crypto_worker(hsm, "NoModule", SHAREDLIBRARY="/opt/nowhere/libhsm.so"))
    store.update_worker(5, crypto_worker(hsm, "NoLibraryProperty", SHAREDLIBRARY=""))
    services.runtime.load()
    good = services.runtime.get("GoodToken").crypto_token()
    good.generate_key(alias, "EC", "secp256r1")
    ca_key, ca_cert = throwaway_ca()
    cert = issue(ca_key, ca_cert, good.public_key(alias), "good")
    for wid, token_name in ((10, "GoodToken"), (11, "WrongPin"), (12, "NoSlot"), (13, "NoModule")):
        store.update_worker(wid, {"NAME": f"Plain{wid}", "IMPLEMENTATION_CLASS": "PlainSigner", "CRYPTOTOKEN": token_name,
                                  "DEFAULTKEY": alias, "SIGNERCERTCHAIN": encode_certificate_property([cert, ca_cert])})
    services.runtime.load()
    try:
        status = {w.name: w.status() for w in services.runtime.workers()}
        assert status["GoodToken"].active and status["Plain10"].active, status["Plain10"].reasons
        expected = {"WrongPin": "wrong PIN", "NoSlot": "no token labelled 'missing-token'",
                    "NoModule": "/opt/nowhere/libhsm.so does not exist", "NoLibraryProperty": "SHAREDLIBRARY is not set"}
        for name, reason in expected.items():
            assert not status[name].active
            assert any(reason in r for r in status[name].reasons), (name, status[name].reasons)
        for wid in (11, 12, 13):
            assert not status[f"Plain{wid}"].active
        sig = process(services.runtime.get("Plain10"), b"still serving").data
        cert.public_key().verify(sig, b"still serving", ec.ECDSA(hashes.SHA256()))
        from signpeer_core.errors import SignpeerError

        with pytest.raises(SignpeerError, match="offline|not activated"):
            process(services.runtime.get("Plain11"), b"x")
        good.remove_key(alias)
    finally:
        services.close()
