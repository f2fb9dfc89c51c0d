"""Token claims in one-time certificates from the self-signed and the local-CA connectors, in
process; the signatures and certificates checked with ``openssl``."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from signpeer_core import devpki
from signpeer_core.api import BadRequestError, Caller, TransportRequest

CLAIMS = {"groups": ["signers"], "aud": "signpeer", "email": "alice@example.com", "name": "Alice, O=Evil",
          "address": {"country": "SE"}, "teams": ["release", "build"]}


def sign(services: Any, worker: str, token: str) -> Any:
    async def go() -> Any:
        return await services.pipeline.process(worker, TransportRequest(b"the document", bearer_token=token),
                                               Caller("TEST"))
    return asyncio.run(go())


def configure(services: Any, home: Path, pki: Any, props: dict[str, str], connector: dict[str, str],
              subject: str, san: str) -> None:
    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    store = services.store
    store.update_worker(1, {"NAME": "SoftSource", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
                            "KEYSTOREPASSWORD": "foo123"})
    store.update_worker(2, {"NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker",
                            "CRYPTOTOKEN": "SoftSource", "KEYALG": "ECDSA", "KEYSPEC": "secp256r1",
                            "CERTSIGNATUREALGORITHM": "SHA256withECDSA", "SUBJECTDN_PATTERN": subject,
                            "SUBJECTALTNAME_PATTERN": san, **connector})
    store.update_worker(3, {"NAME": "Signer", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                            "CRYPTOTOKEN": "OneTime", **props})
    services.runtime.load()
    assert services.runtime.get("Signer").status().active, services.runtime.get("Signer").status().reasons


@pytest.fixture
def services(services: Any) -> Any:
    from signpeer_onetimecrypto.worker import close_pools

    yield services
    close_pools()


@pytest.mark.parametrize("connector", [
    {"CACONNECTOR_IMPLEMENTATION": "SelfSignedCAConnector"},
    {"CACONNECTOR_IMPLEMENTATION": "LocalCAConnector", "CACERTIFICATE_FILE": "onetime-ca.pem",
     "CAKEY_FILE": "onetime-ca-key.pem"},
], ids=["self-signed", "local-CA"])
def test_claims_in_the_certificate(services: Any, home: Path, pki: Any, idp: Any, props_for: Any,
                                   connector: dict[str, str], tmp_path: Path) -> None:
    configure(services, home, pki, props_for(idp), connector,
              "CN=${JWT.name},E=${JWT.email},L=${JWT.address.country},OU=${JWT.teams.1}",
              "rfc822Name=${claim.email},uri=${JWT.iss}/users/${JWT.sub}")
    result = sign(services, "Signer", idp.token(CLAIMS))
    (tmp_path / "sig.p7m").write_bytes(result.data)
    (tmp_path / "leaf.pem").write_bytes(result.signer_certificate.public_bytes(Encoding.PEM))
    trust = tmp_path / "leaf.pem" if connector["CACONNECTOR_IMPLEMENTATION"] == "SelfSignedCAConnector" \
        else pki.ca_pem
    out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sig.p7m"),
                          "-CAfile", str(trust), "-purpose", "any"], capture_output=True, check=False)
    assert out.returncode == 0 and out.stdout == b"the document", out.stderr.decode()
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text", "-nameopt",
                           "RFC2253"], capture_output=True, check=True).stdout.decode()
    # The comma in the name stays inside the CN (escaped), it adds no O attribute.
    assert "Subject: CN=Alice\\, O=Evil,emailAddress=alice@example.com,L=SE,OU=build" in text, text
    assert "email:alice@example.com" in text and f"URI:{idp.issuer}/users/alice" in text


def test_missing_or_non_text_claims_are_a_400(services: Any, home: Path, pki: Any, idp: Any, props_for: Any) -> None:
    configure(services, home, pki, props_for(idp), {"CACONNECTOR_IMPLEMENTATION": "SelfSignedCAConnector"},
              "CN=${JWT.name},OU=${JWT.department}", "")
    with pytest.raises(BadRequestError, match="the token has no claim 'department'"):
        sign(services, "Signer", idp.token(CLAIMS))
    with pytest.raises(BadRequestError, match=r"claim 'department' is a list, not text; name one element"):
        sign(services, "Signer", idp.token({**CLAIMS, "department": ["a", "b"]}))
    assert sign(services, "Signer", idp.token({**CLAIMS, "department": "R&D"})).data


def test_claims_in_templates_need_a_token(services: Any, home: Path, pki: Any) -> None:
    configure(services, home, pki, {"AUTHTYPE": "NOAUTH"}, {"CACONNECTOR_IMPLEMENTATION": "SelfSignedCAConnector"},
              "CN=${JWT.name}", "")

    async def go() -> Any:
        # A client cannot supply claims as metadata: only a verified token has them.
        return await services.pipeline.process("Signer", TransportRequest(b"x", metadata={"JWT.name": "forged"}),
                                               Caller("TEST"))

    with pytest.raises(BadRequestError, match="not authorized with a token"):
        asyncio.run(go())
