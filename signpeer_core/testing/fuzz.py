"""Property-based fuzzing of a running server's OpenAPI document (schemathesis), for the core's
tests and any plugin's.

:func:`fuzz_openapi` calls every operation of the document with ``examples`` generated requests
(bounded for CI: no shrinking, no example database, derandomized so a failure repeats) and
checks that no answer is a 5xx and that every answer is documented and conforms to the
document. :func:`server_errors` finds tracebacks and internal errors in a server log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

#: The checks every answer must pass.
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def server_errors(log: str) -> list[str]:
    """Lines of a server log that show an internal error or a traceback."""
    return [line for line in log.splitlines()
            if "Traceback" in line or "internal error" in line or "FAILED 5" in line]


def fuzz_openapi(document: dict[str, Any], base_url: str, ca: str, cert: tuple[str, str] | None = None,
                 examples: int = 25, exclude: Iterable[str] = ()) -> int:
    """Fuzz every operation of ``document`` (but the paths in ``exclude``) on ``base_url``, over TLS
    trusting ``ca`` and presenting ``cert``; returns the number of calls made."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would win over the CA given here
    schema = schemathesis.openapi.from_dict(document)
    skipped = set(exclude)
    calls = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation the document does not describe validly
            raise AssertionError(f"invalid operation in the OpenAPI document: {result.err()}")
        operation = result.ok()
        if operation.path in skipped:
            continue

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            response = case.call(base_url=base_url, session=session, timeout=30, verify=ca, cert=cert)
            calls += 1
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                                response.text[:500])
            case.validate_response(response, checks=CHECKS)

        run()
    session.close()
    return calls
