"""Rules that name a certificate by serial and issuer DN are bound to the issuing CA's key.

A second CA with the same subject DN could mint a certificate with a listed serial (Admin
rights, WSADMINS) or a listed subject (authorized clients): the server refuses to trust two
CAs of one DN, and each rule records the key of the CA trusted when it was made, so a
certificate from another key with the same DN matches nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from signpeer_core import clientcas, devpki
from signpeer_core.errors import ConfigurationError
from signpeer_core.server import check_tls_files
from signpeer_core.settings import load_settings
from signpeer_core.testing import PKI, add_signer, open_services

PROCESS = "/signserver/rest/v1/workers/{}/process"


def impostor_ca(pki: PKI) -> tuple[Any, Any]:
    """A CA with the development CA's subject DN and another key."""
    return devpki.make_ca("CN=signpeer test CA, O=signpeer tests")


def test_two_client_cas_with_one_subject_dn_refuse_to_start(home: Path, pki: PKI, tmp_path: Path) -> None:
    _, twin = impostor_ca(pki)
    twin_file = tmp_path / "twin-ca.pem"
    twin_file.write_bytes(devpki.cert_pem(twin))
    settings = load_settings(home, client_cafiles=(str(home / "tls" / "client-ca.pem"), str(twin_file)))
    with pytest.raises(ConfigurationError) as refused:
        check_tls_files(settings)
    assert str(home / "tls" / "client-ca.pem") in refused.value.message and str(twin_file) in refused.value.message
    assert "CN=signpeer test CA" in refused.value.message
    # The same certificate in two files is one CA: accepted.
    same = tmp_path / "same-ca.pem"
    same.write_bytes(pki.ca_pem.read_bytes())
    check_tls_files(load_settings(home, client_cafiles=(str(home / "tls" / "client-ca.pem"), str(same))))


def test_rules_bound_to_the_ca_key_refuse_a_same_dn_impostor(home: Path, pki: PKI, tmp_path: Path,
                                                             signpeer: Any, start_server: Any, https_client: Any) -> None:
    services = open_services(home)
    try:
        add_signer(services, pki, "Guarded", implementation="CMSSigner")  # AUTHTYPE: CLIENTCERT by default
    finally:
        services.close()
    # Rules made while the development CA is trusted: bound to its key, shown by -list.
    assert signpeer("wsadmins", "-add", "-cert", str(pki.client.pem)).code == 0
    assert signpeer("authorizedclients", "-worker", "Guarded", "-add", "-matchSubjectWithType", "SUBJECT_RDN_CN",
                    "-cert", str(pki.client.pem)).code == 0
    ca_key_id = clientcas.key_id(pki.ca_cert)
    listed = signpeer("wsadmins", "-list").out
    assert listed.count(f"issuer key {ca_key_id}") == 2, listed  # the new rule, and the admin's bound on the write
    listed = signpeer("authorizedclients", "-worker", "Guarded", "-list").out
    assert f"ISSUER KEY: {ca_key_id}" in listed, listed

    # The genuine certificates are accepted.
    server = start_server(home)
    assert https_client(server, cert="client").get("/signserver/rest/v1/workers").status_code == 200
    assert https_client(server, cert="client").post(PROCESS.format("Guarded"), json={"data": "x"}).status_code == 200
    server.stop()

    # The client CA file now holds another CA of the same DN (a re-keyed or a rogue CA), which
    # mints a certificate with the client's serial and subject.
    twin_key, twin = impostor_ca(pki)
    (home / "tls" / "client-ca.pem").write_bytes(devpki.cert_pem(twin))
    key = devpki.new_key()
    forged = devpki.issue(twin_key, twin, pki.client.cert.subject, key.public_key(), profile="client",
                          serial=pki.client.cert.serial_number)
    (tmp_path / "forged.pem").write_bytes(devpki.cert_pem(forged))
    (tmp_path / "forged-key.pem").write_bytes(devpki.key_pem(key))
    pair = (str(tmp_path / "forged.pem"), str(tmp_path / "forged-key.pem"))
    server = start_server(home)
    impostor = https_client(server, cert=pair)
    r = impostor.get("/signserver/rest/v1/workers")
    assert r.status_code == 403, r.text
    r = impostor.post(PROCESS.format("Guarded"), json={"data": "x"})
    assert r.status_code == 403, r.text
