"""WorkerAdmin: the service layer the CLI, the peer endpoint and the Admin Web share.

Real SQLite, the test kit's memory token, openssl as the independent verifier of CSRs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signpeer_core import devpki
from signpeer_core.admin import WorkerAdmin, config_diff, is_secret_key
from signpeer_core.certificates import decode_certificate_property
from signpeer_core.errors import (
    BadRequestError,
    ConflictError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
    UnknownWorkerError,
)
from signpeer_core.keys import public_key_der
from signpeer_core.storage import Admin
from signpeer_core.testing import MEMORY_TOKEN, PASSWORD


@pytest.fixture
def admin(services: Any) -> WorkerAdmin:
    return WorkerAdmin(services, Admin("CN=tester", "CN=Test CA", "1f"))


def make_signer(admin: WorkerAdmin, name: str = "CMSSigner", **props: str) -> int:
    """A crypto worker with the test kit's memory token and a CMS signer using it (no keys yet)."""
    admin.create_worker({"NAME": f"{name}Token", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                         "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": PASSWORD})
    wid = admin.create_worker({"NAME": name, "IMPLEMENTATION_CLASS": "org.signserver.module.cmssigner.CMSSigner",
                               "CRYPTOTOKEN": f"{name}Token", "DEFAULTKEY": "signer00001", "KEYALG": "ECDSA",
                               "KEYSPEC": "secp256r1", **props})
    admin.reload("all")
    return wid


def events(admin: WorkerAdmin, event: str) -> list[Any]:
    return admin.store.audit_events(event=event)


def test_set_and_remove_property_write_diffs_to_the_audit_log(admin: WorkerAdmin) -> None:
    wid = make_signer(admin)
    admin.set_property("cmssigner", "detachedSignature", "true")
    assert admin.worker_config(wid)["DETACHEDSIGNATURE"] == "true"
    admin.set_property(wid, "DETACHEDSIGNATURE", "false")
    assert admin.remove_property("CMSSigner", "detachedsignature") is True
    assert admin.remove_property("CMSSigner", "detachedsignature") is False
    details = [e.details for e in events(admin, "SET_WORKER_CONFIG") if e.worker_id == wid][:3]
    assert details == [{"removed:DETACHEDSIGNATURE": "false"}, {"changed:DETACHEDSIGNATURE": "false"},
                       {"added:DETACHEDSIGNATURE": "true"}]
    last = events(admin, "SET_WORKER_CONFIG")[0]
    assert (last.admin.name, last.admin.issuer, last.admin.serial) == ("CN=tester", "CN=Test CA", "1f")


def test_secrets_are_masked_in_the_audit_log(admin: WorkerAdmin) -> None:
    make_signer(admin)
    admin.set_property("CMSSignerToken", "KEYSTOREPASSWORD", "s3cret")
    assert events(admin, "SET_WORKER_CONFIG")[0].details == {"changed:KEYSTOREPASSWORD": "********"}
    assert is_secret_key("PIN") and is_secret_key("KEYSTOREPASSWORD") and not is_secret_key("MAPPING")
    assert config_diff({"A": "1"}, {"A": "1"}, ()) == {}


def test_unknown_worker_and_new_worker_by_id(admin: WorkerAdmin) -> None:
    with pytest.raises(UnknownWorkerError, match="getstatus brief all"):
        admin.set_property("NoSuchWorker", "X", "1")
    assert admin.set_property("7", "NAME", "Seven") == 7
    assert admin.worker_id("seven") == 7
    with pytest.raises(ConflictError, match="already named"):
        admin.set_property("8", "NAME", "SEVEN")
    assert admin.find_worker_id(8) is None
    with pytest.raises(BadRequestError, match="numeric"):
        admin.set_property(7, "NAME", "12")


def test_global_properties(admin: WorkerAdmin) -> None:
    assert admin.set_global("global", "peers_incoming_enabled", "true") == "GLOB.PEERS_INCOMING_ENABLED"
    node_key = admin.set_global("node", "X", "1")
    assert node_key == f"NODE.{admin.services.settings.node_id.upper()}.X"
    assert admin.get_global("GLOB", "PEERS_INCOMING_ENABLED") == "true"
    assert admin.remove_global("global", "PEERS_INCOMING_ENABLED") is True
    assert admin.remove_global("global", "PEERS_INCOMING_ENABLED") is False
    set_event = events(admin, "SET_GLOBAL_PROPERTY")[1]
    assert set_event.details == {"GLOBALCONFIG_PROPERTY": "GLOB.PEERS_INCOMING_ENABLED", "GLOBALCONFIG_VALUE": "true"}
    assert events(admin, "REMOVE_GLOBAL_PROPERTY")[0].details == {
        "GLOBALCONFIG_PROPERTY": "GLOB.PEERS_INCOMING_ENABLED"}


def test_generate_key_alias_sequence_and_defaults(admin: WorkerAdmin) -> None:
    make_signer(admin)
    with pytest.raises(BadRequestError, match="-alias"):
        admin.generate_key("CMSSignerToken")  # no DEFAULTKEY on the crypto worker
    assert admin.generate_key("CMSSigner", "signer00001") == "signer00001"
    assert admin.generate_key("CMSSigner") == "signer00002"
    # an alias already taken is skipped
    admin.generate_key("CMSSigner", "signer00004", "RSA", "2048")
    admin.set_property("CMSSigner", "DEFAULTKEY", "signer00003")
    assert admin.generate_key("CMSSigner") == "signer00005"
    _, token = admin.token("CMSSigner")
    assert "EC secp256r1" in {i.description for i in token.key_infos()}
    assert "RSA 2048" in {i.description for i in token.key_infos()}
    with pytest.raises(ConflictError):
        admin.generate_key("CMSSigner", "signer00001")
    with pytest.raises(BadRequestError, match="curve"):
        admin.generate_key("CMSSigner", "x", "ECDSA", "secp999")
    keygen = events(admin, "KEYGEN")[-1]
    assert keygen.details == {"KEYALIAS": "signer00001", "CRYPTOTOKEN": "CMSSignerToken", "KEYALG": "ECDSA",
                              "KEYSPEC": "secp256r1"}


def test_key_operations_need_an_active_token(admin: WorkerAdmin) -> None:
    make_signer(admin)
    admin.deactivate("CMSSignerToken")
    with pytest.raises(CryptoTokenOfflineError, match="activatecryptotoken CMSSignerToken"):
        admin.generate_key("CMSSigner", "signer00001")
    admin.activate("CMSSignerToken", PASSWORD)
    admin.generate_key("CMSSigner", "signer00001")


def test_test_and_remove_keys(admin: WorkerAdmin) -> None:
    make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    admin.generate_key("CMSSigner", "signer00002")
    results = admin.test_key("CMSSigner", "all")
    assert [(r.alias, r.success) for r in results] == [("signer00001", True), ("signer00002", True)]
    assert [r.alias for r in admin.test_key("CMSSigner")] == ["signer00001"]
    missing = admin.test_key("CMSSigner", "nope")
    assert not missing[0].success and "FAILURE" in missing[0].line()
    assert len(events(admin, "KEYTEST")) == 4
    admin.remove_key("CMSSigner", "signer00002")
    with pytest.raises(KeyNotFoundError, match="testkey"):
        admin.remove_key("CMSSigner", "signer00002")
    assert events(admin, "KEYREMOVE")[0].details["KEYALIAS"] == "signer00002"


def openssl_req(pem: bytes, tmp_path: Path) -> str:
    path = tmp_path / "req.pem"
    path.write_bytes(pem)
    out = subprocess.run(["openssl", "req", "-verify", "-in", str(path), "-noout", "-text"],
                         capture_output=True, text=True, check=True)
    assert "verify OK" in out.stdout + out.stderr
    return out.stdout


def test_csr_defaults_requestdn_and_algorithm_rule(admin: WorkerAdmin, tmp_path: Path) -> None:
    make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    result = admin.generate_csr("CMSSigner")
    # No certificate but the placeholder: SHA512with<key algorithm> (spec §2.2).
    assert (result.alias, result.subject_dn, result.signature_algorithm) == (
        "signer00001", "CN=signer00001", "SHA512withECDSA")
    text = openssl_req(result.pem, tmp_path)
    assert "ecdsa-with-SHA512" in text and "CN=signer00001" in text.replace(" = ", "=")
    admin.set_property("CMSSigner", "REQUESTDN", "CN=From REQUESTDN,O=Example")
    admin.set_property("CMSSigner", "SIGNATUREALGORITHM", "SHA256withECDSA")
    result = admin.generate_csr("CMSSigner")
    assert result.signature_algorithm == "SHA256withECDSA"
    assert "From REQUESTDN" in openssl_req(result.pem, tmp_path)
    admin.set_property("CMSSigner", "REQUESTSIGNATUREALGORITHM", "SHA384withECDSA")
    assert admin.generate_csr("CMSSigner").signature_algorithm == "SHA384withECDSA"
    explicit = admin.generate_csr("CMSSigner", "CN=Explicit", "sha256WITHecdsa")
    assert explicit.signature_algorithm == "SHA256withECDSA" and explicit.subject_dn == "CN=Explicit"
    gencsr = events(admin, "GENCSR")[0]
    assert gencsr.details["FOR_DEFAULTKEY"] == "true" and gencsr.details["KEYALIAS"] == "signer00001"
    with pytest.raises(BadRequestError, match="NEXTCERTSIGNKEY"):
        admin.generate_csr("CMSSigner", next_key=True)
    with pytest.raises(BadRequestError, match="explicitecc"):
        admin.generate_csr("CMSSigner", explicit_ecc=True)
    with pytest.raises(KeyNotFoundError, match="generatekey"):
        admin.generate_csr("CMSSigner", alias="nope")


def test_csr_for_an_rsa_key(admin: WorkerAdmin, tmp_path: Path) -> None:
    make_signer(admin, KEYALG="RSA", KEYSPEC="2048")
    admin.generate_key("CMSSigner", "signer00001")
    result = admin.generate_csr("CMSSigner", dn="CN=RSA,O=Example,C=SE")
    assert result.signature_algorithm == "SHA512withRSA"
    assert "sha512WithRSAEncryption" in openssl_req(result.pem, tmp_path)


def issue_for(pki: Any, admin: WorkerAdmin, alias: str, cn: str = "CMSSigner") -> x509.Certificate:
    _, token = admin.token("CMSSigner")
    return pki.issue_signer(token.public_key(alias), f"CN={cn}, O=signpeer tests")


def test_install_for_defaultkey_and_refusal_of_another_key(admin: WorkerAdmin, pki: Any) -> None:
    wid = make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    before = admin.worker_config(wid).as_dict()
    other = pki.issue_signer(devpki.new_key().public_key(), "CN=Someone else")
    with pytest.raises(ConflictError, match="does not match the current or next key"):
        admin.install_certificate_chain("CMSSigner", [other, pki.ca_cert])
    assert admin.worker_config(wid).as_dict() == before
    assert [e.outcome for e in events(admin, "CERTINSTALLED")] == ["FAILURE"]  # the refusal is audited
    cert = issue_for(pki, admin, "signer00001")
    pem = devpki.cert_pem(cert, pki.ca_cert)
    result = admin.install_certificate_chain("CMSSigner", pem)
    assert (result.alias, result.promoted) == ("signer00001", False)
    cfg = admin.worker_config(wid)
    assert decode_certificate_property(cfg["SIGNERCERTCHAIN"]) == [cert, pki.ca_cert]
    assert decode_certificate_property(cfg["SIGNERCERT"]) == [cert]
    assert events(admin, "CERTINSTALLED")[0].details["SCOPE"] == "GLOBAL"
    assert "BEGIN CERTIFICATE" in events(admin, "CERTCHAININSTALLED")[0].details["CERTIFICATECHAIN"]
    admin.reload("CMSSigner")
    assert admin.statuses("CMSSigner")[0].active


def test_malformed_certificate_is_refused(admin: WorkerAdmin) -> None:
    make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    with pytest.raises(BadRequestError, match="PEM or DER"):
        admin.install_certificate_chain("CMSSigner", b"-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    with pytest.raises(BadRequestError, match="empty"):
        admin.install_certificate_chain("CMSSigner", b"")


def test_next_key_promotion_and_keep_chain(admin: WorkerAdmin, pki: Any, tmp_path: Path) -> None:
    wid = make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    admin.install_certificate_chain("CMSSigner", [issue_for(pki, admin, "signer00001"), pki.ca_cert])
    nxt = admin.generate_next_key("CMSSigner")
    assert nxt == "signer00002"
    assert admin.generate_next_key("CMSSigner") == "signer00002"  # the pending key is reused
    assert admin.worker_config(wid)["NEXTCERTSIGNKEY"] == "signer00002"
    csr = admin.generate_csr("CMSSigner", next_key=True)
    assert csr.alias == "signer00002" and not csr.for_default_key
    openssl_req(csr.pem, tmp_path)
    # PEERS_KEEPCHAIN: a lone leaf keeps the CA part of the existing chain.
    admin.set_property("CMSSigner", "PEERS_KEEPCHAIN", "true")
    new_cert = pki.issue_signer(csr.csr.public_key(), "CN=CMSSigner renewed")
    result = admin.install_certificate_chain("CMSSigner", [new_cert], extra_properties={"PEERS_ISSUED": "true"},
                                             reload=True)
    assert (result.alias, result.promoted) == ("signer00002", True)
    cfg = admin.worker_config(wid)
    assert cfg["DEFAULTKEY"] == "signer00002" and "NEXTCERTSIGNKEY" not in cfg and cfg["PEERS_ISSUED"] == "true"
    assert decode_certificate_property(cfg["SIGNERCERTCHAIN"]) == [new_cert, pki.ca_cert]
    selected = events(admin, "KEYSELECTED")[0]
    assert selected.details == {"KEYALIAS": "signer00002", "CRYPTOTOKEN": "CMSSignerToken", "SCOPE": "GLOBAL"}
    diff = events(admin, "SET_WORKER_CONFIG")[0].details
    assert diff["changed:DEFAULTKEY"] == "signer00002" and "removed:NEXTCERTSIGNKEY" in diff
    assert admin.services.runtime.get("CMSSigner").alias == "signer00002"  # reload=True
    # replace=True makes a fresh next key even though one is pending
    first = admin.generate_next_key("CMSSigner")
    assert admin.generate_next_key("CMSSigner", replace=True) != first


def test_lone_leaf_without_keep_chain_replaces_the_chain(admin: WorkerAdmin, pki: Any) -> None:
    wid = make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    admin.install_certificate_chain("CMSSigner", [issue_for(pki, admin, "signer00001"), pki.ca_cert])
    leaf = issue_for(pki, admin, "signer00001", "Again")
    admin.install_certificate_chain("CMSSigner", [leaf])
    assert decode_certificate_property(admin.worker_config(wid)["SIGNERCERTCHAIN"]) == [leaf]
    # uploadsignercertificate keeps the CA part
    admin.install_certificate_chain("CMSSigner", [leaf, pki.ca_cert])
    third = issue_for(pki, admin, "signer00001", "Third")
    admin.upload_signer_certificate("CMSSigner", devpki.cert_pem(third))
    assert decode_certificate_property(admin.worker_config(wid)["SIGNERCERTCHAIN"]) == [third, pki.ca_cert]
    with pytest.raises(BadRequestError, match="uploadsignercertificatechain"):
        admin.upload_signer_certificate("CMSSigner", devpki.cert_pem(third, pki.ca_cert))


def test_import_certificate_chain_into_the_token(admin: WorkerAdmin, pki: Any) -> None:
    make_signer(admin)
    admin.generate_key("CMSSigner", "signer00001")
    cert = issue_for(pki, admin, "signer00001")
    with pytest.raises(ConflictError, match="not for key"):
        admin.import_certificate_chain("CMSSigner", [pki.ca_cert], "signer00001")
    admin.import_certificate_chain("CMSSigner", [cert, pki.ca_cert], "signer00001")
    _, token = admin.token("CMSSigner")
    chain = token.certificate_chain("signer00001")
    assert public_key_der(chain[0]) == public_key_der(cert)
    event = events(admin, "CERTCHAININSTALLED")[0]
    assert event.module == "KEY_MANAGEMENT" and event.details["KEYALIAS"] == "signer00001"


def test_reload_bumps_the_generation(admin: WorkerAdmin) -> None:
    make_signer(admin)
    g = admin.store.config_generation()
    assert admin.reload("CMSSigner") == g + 1
    assert admin.reload("all") == g + 2
    with pytest.raises(UnknownWorkerError):
        admin.reload("nope")
    assert events(admin, "RELOAD_WORKER_CONFIG")[0].worker_id is None


def test_statuses_report_offline_reasons(admin: WorkerAdmin) -> None:
    make_signer(admin)
    status = admin.statuses("CMSSigner")[0]
    assert not status.active and "generatekey" in " ".join(status.reasons)
    admin.generate_key("CMSSigner", "signer00001")
    admin.reload("all")
    status = admin.statuses("CMSSigner")[0]
    assert "no signer certificate" in " ".join(status.reasons)
