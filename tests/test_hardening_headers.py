"""``X-Content-Type-Options: nosniff`` on every response of the server, errors included (issue 11, item 23)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from signpeer_core.testing import ServerProcess


def test_every_response_says_nosniff(home: Path, start_server: Callable[..., ServerProcess],
                                     https_client: Callable[..., Any]) -> None:
    (home / "signpeer.toml").write_text((home / "signpeer.toml").read_text() + "max_body_size = 1000\n")
    server = start_server(home)
    client = https_client(server)
    answers = [
        client.get("/healthcheck"),
        client.get("/no/such/endpoint"),                                     # 404 from the router
        client.put("/healthcheck"),                                          # 405
        client.post("/signserver/rest/v1/workers/none/process", json={}),    # an error of the pipeline
        client.post("/signserver/rest/v1/workers/none/process", content=b"x" * 2000),  # 413 before the app
    ]
    assert [a.status_code // 100 for a in answers] == [2, 4, 4, 4, 4]
    for answer in answers:
        assert answer.headers.get("x-content-type-options") == "nosniff", (answer.status_code, answer.text)
