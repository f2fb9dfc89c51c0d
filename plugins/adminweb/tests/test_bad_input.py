"""The Admin Web takes any input without a 5xx or a traceback (issue 11, item 8): Unicode digits,
ids over 4,300 digits, invalid UTF-8 and control characters in paths, queries and form fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signpeer_core.testing import open_services


def test_odd_ids_and_text_get_pages_not_500(web: Any, pki: Any, signpeer: Any, server: Any, home: Path) -> None:
    signpeer("wsauditors", "-add", "-cert", str(pki.admin.pem))
    admin = web(pki.admin)
    for path in ("/workers/%C2%B2", "/workers/%EF%BC%91", "/workers/" + "1" * 5000, "/workers/" + "9" * 25,
                 "/workers/%ED%A0%80", "/workers/a%0Ab%00",
                 "/auditlog?worker=%C2%B2", "/auditlog?worker=" + "9" * 30, "/auditlog?limit=%EF%BC%91%EF%BC%90",
                 "/auditlog?limit=" + "9" * 5000, "/auditlog?worker=%ED%A0%80&limit=%00"):
        r = admin.get(path)
        assert r.status_code in (200, 400, 404), (path[:60], r.status_code)
    admin.get("/workers/1")
    for data in ({"action": "set_property", "key": "NAME", "value": "evil\nname"},
                 {"action": "set_property", "key": "A\u2028B", "value": "v"},
                 {"action": "set_property", "key": "X", "value": "\x00"}):
        r = admin.post("/workers/1", data)
        assert r.status_code in (200, 303, 400), (data, r.status_code)
    admin.get("/administrators")
    r = admin.post("/administrators", {"action": "clear_incoming", "id": "\uff11"})
    assert r.status_code == 400, r.status_code
    r = admin.post("/administrators", {"action": "clear_incoming", "id": "9" * 5000})
    assert r.status_code == 400, r.status_code
    log = server.log()
    assert "Traceback" not in log and "internal error" not in log
    services = open_services(home)
    try:
        name = services.store.worker_properties(1)["NAME"]
    finally:
        services.close()
    assert name == "Signer1"  # the NAME with a line break was refused
