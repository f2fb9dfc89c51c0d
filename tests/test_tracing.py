"""OpenTelemetry traces of signing requests: a real ``signpeer serve`` exporting OTLP/HTTP to a
receiver on loopback (decoded with opentelemetry-proto); the span tree of real requests, the
client's ``traceparent``, the status of a refused request, one tracer provider per process under
``--workers 2``; the settings' checks (docs/monitoring.md, "Tracing")."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the opentelemetry extra is not installed")

from signpeer_core import tracing
from signpeer_core.errors import ConfigurationError
from signpeer_core.settings import load_settings
from signpeer_core.testing import PKI, add_signer, wait_until
from signpeer_core.testing.otlp import OtlpReceiver, request_spans, tracing_env

PROCESS = "/signserver/rest/v1/workers/{}/process"


def traced(receiver: OtlpReceiver) -> dict[str, str]:
    return tracing_env(receiver, SIGNPEER_TRACING_SERVICE_NAME="signpeer-test")


def test_span_tree_of_a_signing_request_and_of_a_refused_one(signpeer_home: Path, services, pki: PKI,
                                                              start_server, https_client, otlp_receiver) -> None:
    add_signer(services, pki, "TracedSigner", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "Guarded")  # CLIENTCERT with no authorized client: refuses everyone
    server = start_server(signpeer_home, env=traced(otlp_receiver))
    client = https_client(server)

    # The client's own trace: the request span continues it.
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    r = client.post(PROCESS.format("TracedSigner"), json={"data": "to be signed"},
                    headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    spans = request_spans(otlp_receiver, request_id, {"signpeer.request", "signpeer.parse", "signpeer.authorize",
                                                 "signpeer.token.sign"})
    root = spans["signpeer.request"]
    assert root.trace_id == trace_id and root.parent_span_id == parent_id
    assert root.kind == "SERVER" and root.status == "UNSET"
    assert root.attributes["signpeer.request_id"] == request_id == r.json()["requestId"]
    assert root.attributes["signpeer.worker.name"] == "TracedSigner"
    assert root.attributes["signpeer.worker.type"] == "PlainSigner"
    assert root.attributes["signpeer.transport"] == "REST"
    assert root.attributes["signpeer.status_code"] == 200
    assert root.resource["service.name"] == "signpeer-test"
    assert root.resource["process.pid"] == server.proc.pid
    for name in ("signpeer.parse", "signpeer.authorize", "signpeer.token.sign"):
        child = spans[name]
        assert child.parent_span_id == root.span_id, f"{name} is not a child of the request span"
        assert child.kind == "INTERNAL" and child.status == "UNSET"
        assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns
    assert spans["signpeer.parse"].end_ns <= spans["signpeer.authorize"].start_ns
    assert spans["signpeer.authorize"].end_ns <= spans["signpeer.token.sign"].start_ns
    assert spans["signpeer.authorize"].attributes["signpeer.authtype"] == "NoAuthorizer"
    assert spans["signpeer.token.sign"].attributes["signpeer.signature_algorithm"] == "SHA256withECDSA"
    assert spans["signpeer.parse"].attributes["signpeer.request.size"] == len(b"to be signed")

    # Without a traceparent: a trace of its own. Refused: ERROR with the client's message, on the
    # request and on the step that refused; no signature span.
    r = client.post(PROCESS.format("Guarded"), json={"data": "x"})
    assert r.status_code == 403
    spans = request_spans(otlp_receiver, r.headers["x-request-id"], {"signpeer.request", "signpeer.authorize"})
    root = spans["signpeer.request"]
    assert root.parent_span_id == "" and root.trace_id != trace_id
    assert root.status == "ERROR" and root.status_message == r.json()["error"]
    assert root.attributes["signpeer.status_code"] == 403
    assert root.attributes["error.type"].endswith("Error")
    assert spans["signpeer.authorize"].status == "ERROR"
    assert "signpeer.token.sign" not in spans

    # A client that did not sample its trace: nothing is recorded for it (parent-based sampling).
    unsampled = secrets.token_hex(16)
    r = client.post(PROCESS.format("TracedSigner"), json={"data": "x"},
                    headers={"traceparent": f"00-{unsampled}-{secrets.token_hex(8)}-00"})
    assert r.status_code == 200

    # An unknown worker: the request span names what was asked, with the 404.
    r = client.post(PROCESS.format("NoSuchWorker"), json={"data": "x"})
    assert r.status_code == 404
    root = request_spans(otlp_receiver, r.headers["x-request-id"], {"signpeer.request"})["signpeer.request"]
    assert root.status == "ERROR" and root.attributes["signpeer.status_code"] == 404
    assert root.attributes["signpeer.worker.name"] == "NoSuchWorker"
    assert otlp_receiver.trace(unsampled) == []  # exported in order: the later request's spans came


def test_each_process_of_workers_2_has_its_own_tracer_provider(signpeer_home: Path, services, pki: PKI,
                                                               start_server, https_client, otlp_receiver) -> None:
    add_signer(services, pki, "TracedSigner", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, "--workers", "2", env=traced(otlp_receiver))
    pids: set[int] = set()

    def sign() -> bool:
        # A connection per request, so that both processes get some.
        with https_client(server, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            r = client.post(PROCESS.format("TracedSigner"), json={"data": "doc"})
        assert r.status_code == 200, r.text
        root = request_spans(otlp_receiver, r.headers["x-request-id"],
                             {"signpeer.request", "signpeer.token.sign"})["signpeer.request"]
        pids.add(root.resource["process.pid"])
        return len(pids) == 2

    wait_until(sign, timeout=60, what="spans from both server processes")
    assert server.proc.pid not in pids  # the supervisor serves nothing and traces nothing
    instances = {s.resource["service.instance.id"] for s in otlp_receiver.spans_named("signpeer.request")}
    assert len(instances) == 2


def test_the_settings_are_checked_before_anything_listens(tmp_path: Path, monkeypatch) -> None:
    assert not tracing.check(load_settings(tmp_path))  # off by default
    with pytest.raises(ConfigurationError, match="one of off, otlp"):
        tracing.check(load_settings(tmp_path, tracing="jaeger"))
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        tracing.check(load_settings(tmp_path, tracing="otlp", tracing_sample_ratio=2))
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        tracing.check(load_settings(tmp_path, tracing="otlp", tracing_endpoint="collector:4318"))
    assert tracing.endpoint_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.endpoint_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.check(load_settings(tmp_path, tracing="otlp"))
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    # The extra not installed: said with the command that installs it.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigurationError, match=r"signpeer-core\[opentelemetry\]"):
        tracing.check(load_settings(tmp_path, tracing="otlp"))


def test_serve_refuses_to_start_when_tracing_cannot_work(signpeer_home: Path, signpeer) -> None:
    result = signpeer("serve", "--port", "0", env={"SIGNPEER_TRACING": "zipkin"})
    assert result.code != 0
    assert "setting 'tracing' must be one of off, otlp" in result.err


def test_the_docs_example(signpeer_home: Path, services, pki: PKI, start_server, otlp_receiver) -> None:
    """docs/monitoring.md "Tracing": its signpeer.toml block and its curl request, against a real
    server (the endpoint pointed at this test's receiver); the Collector file takes OTLP/HTTP where
    the settings send."""
    import re
    import subprocess
    import tomllib
    from urllib.parse import urlsplit

    import yaml

    text = (Path(__file__).parents[1] / "docs" / "monitoring.md").read_text()
    section = text[text.index("## Tracing"):]
    settings_block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    settings = tomllib.loads(settings_block)
    collector = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http == urlsplit(settings["tracing_endpoint"]).netloc
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]

    add_signer(services, pki, "PlainSigner", AUTHTYPE="NOAUTH")
    (signpeer_home / "signpeer.toml").write_text((signpeer_home / "signpeer.toml").read_text() + settings_block.replace(
        settings["tracing_endpoint"], otlp_receiver.url))
    server = start_server(signpeer_home, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    curl = re.search(r"```sh\n(curl .*?)```", section, re.S).group(1).replace("\\\n", " ")
    curl = curl.replace("ca.pem", str(signpeer_home / "tls" / "ca.pem")).replace("https://127.0.0.1:8443", server.url)
    out = subprocess.run(["sh", "-c", curl.replace("curl ", "curl -sS -D - ", 1)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and " 200" in out.stdout.splitlines()[0], out.stdout + out.stderr
    request_id = re.search(r"(?im)^x-request-id: (\S+)", out.stdout).group(1)
    spans = request_spans(otlp_receiver, request_id, {"signpeer.request", "signpeer.token.sign"})
    root = spans["signpeer.request"]
    # The client's sampled trace context wins over tracing_sample_ratio = 0.1.
    assert root.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and root.parent_span_id == "00f067aa0ba902b7"
    assert root.resource["service.name"] == settings["tracing_service_name"]


def test_a_receiver_that_is_down_neither_fails_requests_nor_holds_the_stop(signpeer_home: Path, services, pki: PKI,
                                                                           start_server, https_client) -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    add_signer(services, pki, "TracedSigner", AUTHTYPE="NOAUTH")
    server = start_server(signpeer_home, env={"SIGNPEER_TRACING": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "50",
                                              "SIGNPEER_TRACING_ENDPOINT": f"http://127.0.0.1:{port}"})
    with https_client(server) as client:
        for i in range(20):
            assert client.post(PROCESS.format("TracedSigner"), json={"data": f"doc {i}"}).status_code == 200
    wait_until(lambda: "encountered while exporting" in server.log(), timeout=15, what="the exporter's warning")
    started = time.monotonic()
    assert server.stop() == 0
    # The queued spans get SHUTDOWN_GRACE (3 s), then the exporter gives up: no 30 s of retries.
    assert time.monotonic() - started < 3 + 12
    # One line per minute about the failing exports, not one per retry of every batch.
    assert server.log().count("encountered while exporting") == 1
