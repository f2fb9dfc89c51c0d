"""SignServer's older and dump-only property forms load as SignServer loads them (fixtures of our
own, modelled on SignServer's dumps and its CLI system test files): authorized clients from
``AUTHCLIENT<i>.*`` and ``AUTHCLIENT=``, ``SIGNERCERTIFICATE``, ``WORKER<name>.``/``SIGNER<id>.``
prefixes, ``GLOB.WORKER<n>.CLASSPATH``, ``_MASKED_`` secrets and a worker without a NAME."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core import clientcas
from signpeer_core.admin import WorkerAdmin
from signpeer_core.auth import build_authorizer
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import AuthorizationError
from signpeer_core.names import format_dn
from signpeer_core.propertyfile import apply_property_text
from signpeer_core.storage import Admin
from signpeer_core.testing import PKI
from signpeer_core.workers import SignRequest


@pytest.fixture
def admin(services: Any) -> WorkerAdmin:
    return WorkerAdmin(services, Admin("tester"))


def authorizes(admin: WorkerAdmin, worker: str, cert: Any) -> bool:
    config = admin.worker_config(worker)
    authorizer = build_authorizer(WorkerConfig(config.worker_id, {**config.as_dict(), "AUTHTYPE": "CLIENTCERT"}))
    try:
        # As the server presents a caller: with the key of the trusted CA that issued its certificate.
        trusted = clientcas.load(admin.services.settings.tls_client_cafiles)
        authorizer.authorize(SignRequest(data=b"x", request_id="t", client_certificate=cert,
                                         client_issuer_key_id=trusted.issuer_key_id(cert)), None)
    except AuthorizationError:
        return False
    return True


def test_dump_authclient_rules_and_legacy_authclient(admin: WorkerAdmin, pki: PKI) -> None:
    other = pki.issue_client("Other client")
    issuer = format_dn(pki.client.cert.issuer)
    text = f"""\
WORKERGENID1.NAME=Signer
WORKERGENID1.IMPLEMENTATION_CLASS=PlainSigner
WORKERGENID1.AUTHCLIENT1.SUBJECT.TYPE=CERTIFICATE_SERIALNO
WORKERGENID1.AUTHCLIENT1.SUBJECT.VALUE={pki.client.cert.serial_number:x}
WORKERGENID1.AUTHCLIENT1.ISSUER.TYPE=ISSUER_DN_BCSTYLE
WORKERGENID1.AUTHCLIENT1.ISSUER.VALUE={issuer}
WORKERGENID1.AUTHCLIENT1.DESCRIPTION=from a dump
WORKERGENID2.NAME=Legacy
WORKERGENID2.IMPLEMENTATION_CLASS=PlainSigner
WORKERGENID2.AUTHCLIENT={other.cert.serial_number:x};{issuer}
"""
    result = apply_property_text(admin, text)
    assert any("Adding Authorized Client" in m for m in result.messages)
    assert "AUTHCLIENT1.SUBJECT.TYPE" not in admin.worker_config("Signer").as_dict()
    assert authorizes(admin, "Signer", pki.client.cert) and not authorizes(admin, "Signer", other.cert)
    assert authorizes(admin, "Legacy", other.cert) and not authorizes(admin, "Legacy", pki.client.cert)
    # A leading - removes the rule the values name.
    apply_property_text(admin, f"-WORKERLegacy.AUTHCLIENT={other.cert.serial_number:x};{issuer}\n")
    assert not authorizes(admin, "Legacy", other.cert)


def test_name_and_signer_prefixes_classpath_and_signercertificate(admin: WorkerAdmin, pki: PKI) -> None:
    cert = pki.client.cert
    text = """\
GLOB.WORKERGENID1.CLASSPATH=org.signserver.module.cmssigner.PlainSigner
WORKERGENID1.NAME=OldStyle
SIGNERGENID1.DEFAULTKEY=key1
GLOB.WORKER7.CLASSPATH=org.signserver.server.signers.CryptoWorker
GLOB.WORKER7.SIGNERTOKEN.CLASSPATH=org.signserver.server.cryptotokens.KeystoreCryptoToken
WORKER7.NAME=OldToken
"""
    result = apply_property_text(admin, text)
    old = admin.worker_config("OldStyle")
    assert old["IMPLEMENTATION_CLASS"] == "org.signserver.module.cmssigner.PlainSigner" and old["DEFAULTKEY"] == "key1"
    token = admin.worker_config("OldToken")
    assert token["CRYPTOTOKEN_IMPLEMENTATION_CLASS"].endswith("KeystoreCryptoToken")
    assert not any(k.startswith("GLOB.WORKER") for k in admin.global_config())
    assert any("SignServer 3 declaration" in m for m in result.messages)
    der = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    apply_property_text(admin, f"WORKEROldStyle.SIGNERCERTIFICATE={der}\nSIGNER{old.worker_id}.REQUESTDN=CN=Signer #2\n")
    old = admin.worker_config("OldStyle")
    assert old["SIGNERCERT"] == der and "SIGNERCERTIFICATE" not in old.as_dict()
    assert old["REQUESTDN"] == "CN=Signer #2"


def test_masked_values_keep_what_is_stored_and_a_nameless_worker_loads(admin: WorkerAdmin) -> None:
    # Modelled on SignServer's test-masked-properties: secrets masked, one worker without NAME.
    apply_property_text(admin, "WORKER70.NAME=Masked\nWORKER70.IMPLEMENTATION_CLASS=CryptoWorker\n"
                               "WORKER70.KEYSTOREPASSWORD=secret1\n")
    result = apply_property_text(admin, "WORKER70.KEYSTOREPASSWORD=_MASKED_\nWORKER70.PIN=_MASKED_\n"
                                        "WORKER71.KEYSTORETYPE=PKCS12\n")
    cfg = admin.worker_config("Masked")
    assert cfg["KEYSTOREPASSWORD"] == "secret1" and "PIN" not in cfg.as_dict()
    assert any("_MASKED_" in m and "kept" in m for m in result.messages)
    assert admin.worker_config(71)["KEYSTORETYPE"] == "PKCS12"
    assert any("worker 71 has no NAME" in m for m in result.messages)


def test_deprecated_authorized_client_commands(admin: WorkerAdmin, pki: PKI, home: Any, capsys: Any) -> None:
    from signpeer_core.cli.main import main

    admin.create_worker({"NAME": "Old", "IMPLEMENTATION_CLASS": "PlainSigner"})
    serial, issuer = f"{pki.client.cert.serial_number:x}", format_dn(pki.client.cert.issuer)
    assert main(["--home", str(home), "addauthorizedclient", "Old", serial, issuer]) == 0
    assert "Adding the client certificate with sn" in capsys.readouterr().out
    assert authorizes(admin, "Old", pki.client.cert)
    assert main(["--home", str(home), "listauthorizedclients", "Old"]) == 0
    assert f"CERTIFICATE_SERIALNO {serial}" in capsys.readouterr().out
    assert main(["--home", str(home), "removeauthorizedclient", "Old", serial, issuer]) == 0
    assert "Client Removed" in capsys.readouterr().out
    assert not authorizes(admin, "Old", pki.client.cert)
    assert main(["--home", str(home), "removeauthorizedclient", "Old", serial, issuer]) == 0
    assert "doesn't seem to exist" in capsys.readouterr().out
