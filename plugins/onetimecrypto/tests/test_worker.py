"""OneTimeCryptoWorker in one process: the cycle, templates, checks, and keys deleted on every path."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.errors import BadRequestError, ServiceUnavailableError, WorkerOfflineError
from signpeer_core.keys import format_dn, public_key_der
from signpeer_core.workers import SignRequest
from signpeer_onetimecrypto.connectors import CARefusedError


def sign(services: Any, data: bytes = b"hello", request_id: str = "tx1", username: str | None = "alice",
         worker: str = "Signer", **kw: Any) -> Any:
    w = services.runtime.get(worker)
    return asyncio.run(w.process(SignRequest(data=data, request_id=request_id, username=username, **kw)))


def onetime(services: Any) -> Any:
    return services.runtime.get("OneTime")


def openssl_verify(tmp_path: Path, cms_der: bytes, ca_pem: Path, data: bytes) -> bytes:
    sig = tmp_path / "sig.p7m"
    sig.write_bytes(cms_der)
    out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(sig), "-CAfile", str(ca_pem),
                          "-purpose", "any"], capture_output=True, check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == data
    return out.stdout


def test_active_without_certificate_and_every_signature_new_key(configure: Any, services: Any, pki: Any, tmp_path: Path) -> None:
    configure(services)
    for name in ("SoftSource", "OneTime", "Signer"):
        st = services.runtime.get(name).status()
        assert st.active, (name, st.reasons)
    seen_keys, seen_serials = set(), set()
    for i in range(5):
        data = f"document {i}".encode()
        resp = sign(services, data, request_id=f"tx-{i}")
        cert = resp.signer_certificate
        seen_keys.add(public_key_der(cert))
        seen_serials.add(cert.serial_number)
        assert cert.issuer == pki.ca_cert.subject
        assert format_dn(cert.subject) == f"CN=alice, UID=tx-{i}, O=signpeer tests, C=SE"
        openssl_verify(tmp_path, resp.data, pki.ca_pem, data)
    assert len(seen_keys) == 5 and len(seen_serials) == 5
    assert onetime(services).source.live == 0
    assert services.runtime.get("SoftSource").token.key_aliases() == []  # nothing written to the keystore


def test_templates_metadata_san_and_escaping(configure: Any, services: Any) -> None:
    configure(services, {
        "USERNAME_PATTERN": "onetime-${transactionId}",
        "SUBJECTDN_PATTERN": "CN=${username},OU=${metadata.department},O=signpeer tests",
        "SUBJECTALTNAME_PATTERN": "rfc822Name=${username}@example.com,dNSName=signer.example.com,"
                                  "upn=${username}@corp,directoryName=CN=Dir ${transactionId},O=X",
    })
    resp = sign(services, username="bob", metadata={"department": "Sales, O=Evil"})
    cert = resp.signer_certificate
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "Sales, O=Evil"
    assert [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)] == ["signpeer tests"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["bob@example.com"]
    assert san.get_values_for_type(x509.DNSName) == ["signer.example.com"]
    assert format_dn(san.get_values_for_type(x509.DirectoryName)[0]) == "CN=Dir tx1, O=X"
    assert len(san.get_values_for_type(x509.OtherName)) == 1


def test_client_certificate_cn_is_the_username(configure: Any, services: Any, pki: Any) -> None:
    configure(services)
    resp = sign(services, username=None, client_certificate=pki.client.cert)
    assert "CN=client1" in format_dn(resp.signer_certificate.subject)


def test_missing_username_is_a_clear_400_and_key_deleted(configure: Any, services: Any) -> None:
    configure(services)
    with pytest.raises(BadRequestError, match=r"\$\{username\}.*AUTHTYPE=USERNAME"):
        sign(services, username=None)
    assert onetime(services).source.live == 0


@pytest.mark.parametrize("props, reason", [
    ({"SUBJECTDN_PATTERN": "CN=${user}"}, r"SUBJECTDN_PATTERN: unknown variable \$\{user\}"),
    ({"USERNAME_PATTERN": "x-${nope.x}"}, r"USERNAME_PATTERN: unknown variable"),
    ({"SUBJECTALTNAME_PATTERN": "krb5principal=a@B"}, "name form 'krb5principal' is not supported"),
    ({"SUBJECTALTNAME_PATTERN": "foo=bar"}, "not form=value with a known name form"),
    ({"CACONNECTOR_IMPLEMENTATION": "NoSuchConnector"}, "unknown CA connector type 'NoSuchConnector'"),
    ({"CAKEY_FILE": None}, "CAKEY_FILE is required by LocalCAConnector"),
    ({"CERTSIGNATUREALGORITHM": "SHA256withRSA"}, "cannot sign with a EC secp256r1 key"),
    ({"CERTIFICATEENDTIME": "tomorrow"}, "CERTIFICATEENDTIME: 'tomorrow' is neither"),
    ({"CRYPTOTOKEN": None}, "CRYPTOTOKEN is not set"),
    ({"KEYSPEC": "secp999"}, "unsupported EC curve"),
    ({"MAX_WAITING": "-1"}, "MAX_WAITING must be 0"),
])
def test_configuration_errors_found_at_load(configure: Any, services: Any, props: dict[str, Any], reason: str) -> None:
    configure(services, props)
    status = onetime(services).status()
    assert not status.active
    assert any(__import__("re").search(reason, r) for r in status.reasons), status.reasons
    signer = services.runtime.get("Signer").status()
    assert not signer.active and any("one-time crypto worker 'OneTime'" in r for r in signer.reasons), signer.reasons
    with pytest.raises(WorkerOfflineError) as err:  # a signing request gets the same reason, not "not activated"
        sign(services)
    assert __import__("re").search(reason, err.value.message), err.value.message


def test_validity_window_from_properties(configure: Any, services: Any) -> None:
    configure(services, {"CERTIFICATESTARTTIME": "-0:1:0", "CERTIFICATEENDTIME": "0:2:0"})
    cert = sign(services).signer_certificate
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(span.total_seconds() - 3 * 3600) < 5


def test_short_certificate_refused(configure: Any, services: Any) -> None:
    configure(services, {"CERTIFICATEENDTIME": "2020-01-01 00:00:00+00:00"})
    with pytest.raises(CARefusedError):
        sign(services)
    assert onetime(services).source.live == 0


def test_self_signed_connector(configure: Any, services: Any, tmp_path: Path) -> None:
    configure(services, {"CACONNECTOR_IMPLEMENTATION":
                         "org.signserver.module.onetime.caconnector.SelfSignedCAConnector",
                         "CACERTIFICATE_FILE": None, "CAKEY_FILE": None})
    resp = sign(services, b"self")
    cert = resp.signer_certificate
    assert cert.issuer == cert.subject
    pem = tmp_path / "self.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    openssl_verify(tmp_path, resp.data, pem, b"self")


class Flaky:
    """A connector wrapper that fails, hangs or works, in turn."""

    needs_private_key = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.n = 0

    async def request_certificate(self, request: Any) -> Any:
        self.n += 1
        mode = self.n % 4
        if mode == 1:
            raise CARefusedError("injected CA failure")
        if mode == 2:
            await asyncio.sleep(10)  # longer than the wait timeout
        if mode == 3:
            chain = await self.inner.request_certificate(request)
            return [chain[1]] + chain  # a certificate for another key: must be refused
        return await self.inner.request_certificate(request)

    def timeout_message(self, request: Any, waited: float) -> str:
        return self.inner.timeout_message(request, waited)

    def offline_reasons(self) -> list[str]:
        return []


def test_keys_deleted_on_failures_timeouts_and_cancellation(configure: Any, services: Any) -> None:
    configure(services, {"CACONNECTOR_WAITTIMEOUT": "0.05"})
    w = onetime(services)
    w.connector = Flaky(w.connector)
    signer = services.runtime.get("Signer")
    outcomes: dict[str, int] = {}

    async def run() -> None:
        for i in range(40):
            try:
                await signer.process(SignRequest(data=b"x", request_id=f"t{i}", username="u"))
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except ServiceUnavailableError as exc:
                assert "deleted" in exc.message
                outcomes["timeout"] = outcomes.get("timeout", 0) + 1
            except CARefusedError:
                outcomes["refused"] = outcomes.get("refused", 0) + 1
        # client disconnects: the request task is cancelled while waiting for the CA
        w.connector = Flaky(w.connector.inner)
        w.connector.n = 1  # next call hangs
        for i in range(10):
            w.connector.n = 1
            task = asyncio.ensure_future(signer.process(SignRequest(data=b"x", request_id=f"c{i}", username="u")))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert outcomes == {"ok": 10, "timeout": 10, "refused": 20}
    assert w.source.live == 0


def test_rsa_key_pool(configure: Any, services: Any) -> None:
    from signpeer_core.testing import wait_until
    from signpeer_onetimecrypto.worker import close_pools

    configure(services, {"KEYALG": "RSA", "KEYSPEC": "2048", "CERTSIGNATUREALGORITHM": "SHA256withRSA",
                         "KEYPOOL_SIZE": "3"})
    w = onetime(services)
    assert w.pool is None  # started by the first signing request, not by loading
    first = sign(services, request_id="p0").signer_certificate
    wait_until(lambda: w.pool.available >= 3, what="the key pool to fill")
    assert w.pool.available == 3
    from prometheus_client import REGISTRY  # the pool's fill level in /metrics

    def fill() -> float | None:
        return REGISTRY.get_sample_value("signpeer_onetime_keypool_keys", {"worker": "OneTime"})

    wait_until(lambda: fill() == 3, what="the pool's gauge")
    assert REGISTRY.get_sample_value("signpeer_onetime_keypool_size", {"worker": "OneTime"}) == 3
    certs = [first] + [sign(services, request_id=f"p{i}").signer_certificate for i in range(1, 4)]
    assert w.pool.available < 3
    assert len({public_key_der(c) for c in certs}) == 4
    services.runtime.load()  # same settings: the pool survives the reload
    assert onetime(services).pool is w.pool
    close_pools()
    assert w.source.live == 0
    assert fill() == 0


def test_readme_documents_every_property() -> None:
    from signpeer_onetimecrypto.connectors import LocalCAConnector
    from signpeer_onetimecrypto.worker import OneTimeCryptoWorker

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for doc in OneTimeCryptoWorker.properties + LocalCAConnector.properties:
        assert f"| `{doc.name}` |" in readme, doc.name
