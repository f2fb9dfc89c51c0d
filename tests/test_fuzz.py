"""Property-based fuzzing of the REST interface: schemathesis against its served OpenAPI document,
on a live server over TLS (:mod:`signpeer_core.testing.fuzz`). Every answer must be documented and
conform to the document, no answer may be a 5xx, and the server log must hold no traceback.
Bounded for CI: ``FUZZ_EXAMPLES`` generated requests per operation.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis

from signpeer_core.testing import PKI, ServerProcess, add_signer, client_context, open_services, write_home
from signpeer_core.testing.fuzz import fuzz_openapi, server_errors

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
OPENAPI = "/signserver/rest/v1/openapi.json"


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


def _document(server: ServerProcess, pki: PKI) -> dict:
    return httpx.get(server.url + OPENAPI, verify=client_context(pki.ca_pem), timeout=30).json()


def test_rest_api_fuzz(rest_server: ServerProcess, pki: PKI) -> None:
    # As the administrator, so that the admin operations are reached too, not only refused.
    calls = fuzz_openapi(_document(rest_server, pki), rest_server.url, str(pki.ca_pem), pki.admin.pair,
                         examples=EXAMPLES)
    assert calls >= EXAMPLES  # the fuzzer did reach the server
    assert server_errors(rest_server.log()) == []


def test_rest_openapi_covers_every_route(services) -> None:
    from signpeer_core.openapi import openapi_document
    from signpeer_core.rest import routes

    assert {route.path for route in routes(services)} == set(openapi_document()["paths"])


def test_served_document_is_valid_openapi(rest_server: ServerProcess, pki: PKI) -> None:
    schema = schemathesis.openapi.from_dict(_document(rest_server, pki))
    operations = [r.ok() for r in schema.get_all_operations()]  # .ok() raises on an invalid operation
    assert {o.method.upper() for o in operations} == {"GET", "POST"}
    assert len(operations) == 11
