"""Property-based fuzzing of the REST interface: schemathesis against its served OpenAPI document,
on a live server over TLS. Every answer must be documented and conform to the document, no
answer may be a 5xx, and the server log must hold no traceback.

Bounded for CI: a fixed number of examples per operation (``FUZZ_EXAMPLES``), no shrinking, no
example database.
"""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from signpeer_core.testing import PKI, ServerProcess, add_signer, open_services, write_home

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def server_errors(log: str) -> list[str]:
    """Lines of a server log that show an internal error or a traceback."""
    return [line for line in log.splitlines()
            if "Traceback" in line or "internal error" in line or " 500 " in line or "FAILED 5" in line]


def fuzz_schema(document: dict, base_url: str, session: requests.Session, examples: int) -> int:
    """Run every operation of ``document`` against ``base_url``; returns how many calls were made."""
    schema = schemathesis.openapi.from_dict(document)
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            response = case.call(base_url=base_url, session=session, timeout=30, verify=session.verify,
                                 cert=session.cert)
            calls += 1
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:500])
            case.validate_response(response, checks=checks)

        run()
    return calls


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("fuzz") / "home", pki, "max_body_size = 65536\n")
    services = open_services(home)
    add_signer(services, pki, "FuzzPlain", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "FuzzCMS", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    services.close()
    server = ServerProcess(home, (), None).start()
    yield server
    server.stop()


def test_rest_api_fuzz(rest_server: ServerProcess, pki: PKI) -> None:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would win over session.verify
    session.verify = str(pki.ca_pem)
    session.cert = pki.admin.pair  # so that the admin operations are reached too, not only refused
    document = session.get(rest_server.url + "/signserver/rest/v1/openapi.json", timeout=30).json()
    calls = fuzz_schema(document, rest_server.url, session, EXAMPLES)
    assert calls >= EXAMPLES  # the fuzzer did reach the server
    assert server_errors(rest_server.log()) == []


def test_rest_openapi_covers_every_route(services) -> None:
    from signpeer_core.openapi import openapi_document
    from signpeer_core.rest import routes

    documented = set(openapi_document()["paths"])
    assert {route.path for route in routes(services)} == documented


def test_served_document_is_valid_openapi(rest_server: ServerProcess, pki: PKI) -> None:
    document = requests.get(rest_server.url + "/signserver/rest/v1/openapi.json", verify=str(pki.ca_pem),
                            timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [r.ok() for r in schema.get_all_operations()]  # .ok() raises on an invalid operation
    assert {o.method.upper() for o in operations} == {"GET", "POST"}
    assert len(operations) == 6
