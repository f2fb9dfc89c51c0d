"""A legacy multi-key PKCS#12 keystore, as Java keytool before JDK 12 wrote it and as SignServer's
test keystore ``dss10_keystore.p12`` is: certificates under pbeWithSHAAnd40BitRC2-CBC, a SHA-1
MAC, several keys, one of them DSA. Our own fixture, built here; openssl (``-legacy``) checks it
is a real legacy file. The soft token reads every key, DSA does not stop the others, signatures
verify with openssl, and the first write stores the keystore in PBES2/AES (openssl reads it
without ``-legacy``)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
from asn1crypto import algos, cms, core
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_p12
from Crypto.Cipher import ARC2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from signpeer_core import devpki
from signpeer_core.cli.main import main
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.workers import SignRequest
from signpeer_softtoken.pkcs12 import pkcs12_kdf

PASSWORD = "foo123"


def _bmp(password: str) -> bytes:
    return password.encode("utf-16-be") + b"\0\0"


def _attrs(alias: str, local_id: bytes) -> asn1_p12.Attributes:
    return asn1_p12.Attributes([{"type": "friendly_name", "values": [alias]},
                                {"type": "local_key_id", "values": [local_id]}])


def legacy_keystore(entries: list[tuple[str, Any, list[Any]]]) -> bytes:
    """PKCS#12 with PKCS#8-encrypted key bags and RC2-40 encrypted certificates, SHA-1 MAC."""
    key_bags, cert_bags = [], []
    for alias, key, chain in entries:
        local_id = hashlib.sha1(alias.encode()).digest()
        enc = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(PASSWORD.encode()))
        key_bags.append(asn1_p12.SafeBag({"bag_id": "pkcs8_shrouded_key_bag",
                                          "bag_value": asn1_keys.EncryptedPrivateKeyInfo.load(enc),
                                          "bag_attributes": _attrs(alias, local_id)}))
        for i, cert in enumerate(chain):
            bag = {"bag_id": "cert_bag", "bag_value": asn1_p12.CertBag({
                "cert_id": "x509", "cert_value": asn1_p12.Certificate.load(cert.public_bytes(serialization.Encoding.DER))})}
            if i == 0:
                bag["bag_attributes"] = _attrs(alias, local_id)
            cert_bags.append(asn1_p12.SafeBag(bag))
    salt, iterations = os.urandom(8), 2048
    key = pkcs12_kdf("sha1", _bmp(PASSWORD), salt, 1, iterations, 5)
    iv = pkcs12_kdf("sha1", _bmp(PASSWORD), salt, 2, iterations, 8)
    plain = asn1_p12.SafeContents(cert_bags).dump()
    pad = 8 - len(plain) % 8
    encrypted = ARC2.new(key, ARC2.MODE_CBC, iv=iv, effective_keylen=40).encrypt(plain + bytes([pad]) * pad)
    alg = algos.EncryptionAlgorithm({"algorithm": "pkcs12_sha1_rc2_40",
                                     "parameters": algos.Pbes1Params({"salt": salt, "iterations": iterations})})
    auth_safe = asn1_p12.AuthenticatedSafe([
        cms.ContentInfo({"content_type": "encrypted_data", "content": cms.EncryptedData({
            "version": "v0", "encrypted_content_info": {"content_type": "data", "content_encryption_algorithm": alg,
                                                        "encrypted_content": encrypted}})}),
        cms.ContentInfo({"content_type": "data", "content": asn1_p12.SafeContents(key_bags).dump()}),
    ]).dump()
    mac_salt = os.urandom(8)
    mac_key = pkcs12_kdf("sha1", _bmp(PASSWORD), mac_salt, 3, iterations, 20)
    return asn1_p12.Pfx({
        "version": "v3",
        "auth_safe": cms.ContentInfo({"content_type": "data", "content": auth_safe}),
        "mac_data": {"mac": {"digest_algorithm": {"algorithm": "sha1", "parameters": core.Null()},
                             "digest": hmac.new(mac_key, auth_safe, "sha1").digest()},
                     "mac_salt": mac_salt, "iterations": iterations},
    }).dump()


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def test_legacy_multi_key_keystore_with_a_dsa_key(tmp_path: Path, capsys: Any) -> None:
    ca_key, ca_cert = devpki.make_ca("CN=Legacy Test CA,O=signpeer tests,C=SE")
    entries = []
    for alias, key in (("signer00001", rsa.generate_private_key(65537, 2048)),
                       ("signer00002", ec.generate_private_key(ec.SECP256R1())),
                       ("signer00004", dsa.generate_private_key(2048))):
        cert = devpki.issue(ca_key, ca_cert, f"CN={alias},O=signpeer tests,C=SE", key.public_key(), profile="signer")
        entries.append((alias, key, [cert, ca_cert]))
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--empty"]) == 0
    keystore = home / "legacy.p12"
    keystore.write_bytes(legacy_keystore(entries))
    info = openssl("pkcs12", "-in", str(keystore), "-passin", f"pass:{PASSWORD}", "-info", "-nokeys", "-legacy")
    assert info.returncode == 0, info.stderr
    assert "pbeWithSHA1And40BitRC2-CBC" in info.stderr and info.stdout.count("friendlyName") == 3
    props = tmp_path / "legacy.properties"
    props.write_text(f"""\
WORKERGENID1.TYPE=CRYPTO_WORKER
WORKERGENID1.IMPLEMENTATION_CLASS=org.signserver.server.signers.CryptoWorker
WORKERGENID1.CRYPTOTOKEN_IMPLEMENTATION_CLASS=org.signserver.server.cryptotokens.KeystoreCryptoToken
WORKERGENID1.NAME=LegacyToken
WORKERGENID1.KEYSTORETYPE=PKCS12
WORKERGENID1.KEYSTOREPATH={keystore}
WORKERGENID1.KEYSTOREPASSWORD={PASSWORD}
WORKERGENID2.TYPE=PROCESSABLE
WORKERGENID2.IMPLEMENTATION_CLASS=org.signserver.module.cmssigner.CMSSigner
WORKERGENID2.NAME=LegacyCMS
WORKERGENID2.AUTHTYPE=NOAUTH
WORKERGENID2.CRYPTOTOKEN=LegacyToken
WORKERGENID2.DEFAULTKEY=signer00001
""")
    assert main(["--home", str(home), "setproperties", str(props)]) == 0
    assert main(["--home", str(home), "reload", "all"]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "getstatus", "brief", "LegacyCMS"]) == 0
    assert "Worker status : Active" in capsys.readouterr().out
    # Every key loads; the DSA key is reported, the others pass.
    assert main(["--home", str(home), "testkey", "LegacyToken", "all"]) == 254
    out = capsys.readouterr().out
    assert "signer00001, RSA 2048: SUCCESS" in out and "signer00002, EC secp256r1: SUCCESS" in out
    assert "signer00004" in out and "FAILURE (unsupported key type DSA" in out
    # A signature with the RSA key, verified by openssl against the CA.
    (tmp_path / "ca.pem").write_bytes(devpki.cert_pem(ca_cert))
    services = Services.open(load_settings(home))
    try:
        result = anyio.run(services.runtime.get("LegacyCMS").process, SignRequest(data=b"legacy", request_id="t"))
    finally:
        services.close()
    (tmp_path / "signed.p7s").write_bytes(result.data)
    verified = openssl("cms", "-verify", "-CAfile", str(tmp_path / "ca.pem"), "-inform", "DER",
                       "-in", str(tmp_path / "signed.p7s"))
    assert verified.returncode == 0 and verified.stdout == "legacy", verified.stderr
    # The first write (a new key) stores the keystore in PBES2/AES; the DSA key is kept.
    assert main(["--home", str(home), "generatekey", "LegacyToken", "-keyalg", "ECDSA", "-keyspec", "secp256r1",
                 "-alias", "signer00005"]) == 0
    info = openssl("pkcs12", "-in", str(keystore), "-passin", f"pass:{PASSWORD}", "-info", "-nokeys")
    assert info.returncode == 0, info.stderr
    assert "RC2" not in info.stderr and "PBES2" in info.stderr and "AES-256-CBC" in info.stderr
    for alias in ("signer00001", "signer00002", "signer00004", "signer00005"):
        assert f"friendlyName: {alias}" in info.stdout, info.stdout
