"""A SignServer administrator's time-stamp configuration loads unchanged: a properties file in the
shape of SignServer's ``timestamp.properties`` sample (a ``CryptoTokenP12`` keystore worker and
the ``TimeStampSigner`` with the sample's properties), set with ``setproperties``, becomes ACTIVE
with a key and a certificate with the timeStamping EKU, and answers openssl's query sent by curl."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

KEYSTORE_PASSWORD = "foo123"

# Modelled on SignServer's sample-configs/timestamp.properties (its TSA properties, comments and
# the commented-out options as they come), plus the keystore crypto worker it names.
PROPERTIES = """\
# The keystore the time-stamp signer uses
WORKERGENID1.TYPE=CRYPTO_WORKER
WORKERGENID1.IMPLEMENTATION_CLASS=org.signserver.server.signers.CryptoWorker
WORKERGENID1.CRYPTOTOKEN_IMPLEMENTATION_CLASS=org.signserver.server.cryptotokens.KeystoreCryptoToken
WORKERGENID1.NAME=CryptoTokenP12
WORKERGENID1.KEYSTORETYPE=PKCS12
WORKERGENID1.KEYSTOREPATH={keystore}
WORKERGENID1.KEYSTOREPASSWORD={password}

## General properties
WORKERGENID2.TYPE=PROCESSABLE
WORKERGENID2.IMPLEMENTATION_CLASS=org.signserver.module.tsa.TimeStampSigner
WORKERGENID2.NAME=TimeStampSigner
WORKERGENID2.AUTHTYPE=NOAUTH
WORKERGENID2.CRYPTOTOKEN=CryptoTokenP12
WORKERGENID2.DEFAULTKEY=ts00003
#WORKERGENID2.CHECKCERTVALIDITY=true
#WORKERGENID2.KEYUSAGELIMIT=-1

## TSA properties
WORKERGENID2.DEFAULTTSAPOLICYOID=1.3.6.1.4.1.22408.1.2.3.45
#WORKERGENID2.ACCEPTEDALGORITHMS=SHA1;SHA224;SHA256;SHA384;SHA512
#WORKERGENID2.ACCEPTEDPOLICIES=1.3.6.1.4.1.22408.1.2.3.45;1.3.6.1.4.1.22408.1.2.3.46
WORKERGENID2.ACCEPTANYPOLICY=true
#WORKERGENID2.ACCEPTEDEXTENSIONS=
#WORKERGENID2.TIMESOURCE=org.signserver.server.LocalComputerTimeSource
#WORKERGENID2.SIGNATUREALGORITHM=SHA256WithRSA
#WORKERGENID2.ACCURACYMICROS=500
#WORKERGENID2.TSA_FROM_CERT=true
#WORKERGENID2.MAXSERIALNUMBERLENGTH=16
#WORKERGENID2.INCLUDESTATUSSTRING=false
WORKERGENID2.DISABLEKEYUSAGECOUNTER=true
WORKERGENID2.VERIFY_TOKEN_SIGNATURE=true
"""


def test_sample_loads_becomes_active_and_answers_openssl(pki: Any, kit: Any, home: Path, tmp_path: Path,
                                                         signpeer: Any, start_server: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = kit.tsa_certificate(pki, key.public_key(), "CN=TimeStampSigner, O=signpeer tests")
    keystore = home / "timestamp.p12"
    keystore.write_bytes(pkcs12.serialize_key_and_certificates(
        b"ts00003", key, cert, [pki.ca_cert], serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode())))
    props = tmp_path / "timestamp.properties"
    props.write_text(PROPERTIES.format(keystore=keystore, password=KEYSTORE_PASSWORD))
    assert signpeer("setproperties", str(props)).code == 0
    assert signpeer("reload", "all").code == 0
    status = signpeer("getstatus", "brief", "TimeStampSigner")
    assert status.code == 0, status.err
    assert re.search(r"Worker status\s*:\s*active", status.out, re.I) and "Errors:" not in status.out, status.out

    server = start_server(home)
    query = kit.ts_query(tmp_path, b"SignServer sample", "-cert")
    reply = tmp_path / "reply.tsr"
    curl = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki.ca_pem), "-H",
                           "Content-Type: application/timestamp-query", "--data-binary", f"@{query}",
                           "-o", str(reply), f"{server.url}/signserver/tsa?workerName=TimeStampSigner"],
                          capture_output=True, check=False)
    assert curl.returncode == 0, curl.stderr.decode()
    text = kit.reply_text(tmp_path, reply.read_bytes())
    assert "Status: Granted." in text and "Policy OID: 1.3.6.1.4.1.22408.1.2.3.45" in text
    verified = kit.ts_verify(tmp_path, query, reply.read_bytes(), pki)
    assert verified.returncode == 0, verified.stderr.decode()
