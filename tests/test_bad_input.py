"""Bad input never makes a 5xx, a traceback or a forged log line (issue 11, items 8, 9 and 11).

Over a real server and the real command line: Unicode digits, ids over 4,300 digits, JSON
nested 1,000 deep, lone surrogates, control characters in names, a client hanging up mid-body,
a port out of range. Hypothesis checks that the property-file parser and the id rules are total.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import unicodedata
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signpeer_core.errors import BadRequestError, SignpeerError
from signpeer_core.identifiers import MAX_WORKER_ID, check_identifier, not_text, worker_id_of
from signpeer_core.logconfig import escape_controls
from signpeer_core.propertyfile import apply_property_text, parse_properties
from signpeer_core.testing import PKI, ServerProcess, add_signer, client_context, open_services, wait_until, write_home
from signpeer_core.testing.fuzz import server_errors

PROCESS = "/signserver/rest/v1/workers/{}/process"
HEADERS = {"X-Keyfactor-Requested-With": "tests", "Content-Type": "application/json"}
#: A worker log line: date, time, level, logger, then the fields.
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: PKI):
    home = write_home(tmp_path_factory.mktemp("badinput") / "home", pki)
    services = open_services(home)
    add_signer(services, pki, "Plain", AUTHTYPE="NOAUTH")
    services.close()
    server = ServerProcess(home, (), None).start()
    yield server
    server.stop()


@pytest.fixture
def client(server: ServerProcess, pki: PKI):
    with httpx.Client(base_url=server.url, verify=client_context(pki.ca_pem, pki.admin.pair), headers=HEADERS,
                      timeout=30) as c:
        yield c


# -- item 8: ids and bodies ----------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["%C2%B2", "%EF%BC%91", "%D9%A1", "1" * 5000, "9" * 20, "%ED%A0%80", "-1", "0"])
def test_odd_worker_references_are_404_not_500(client: httpx.Client, server: ServerProcess, ref: str) -> None:
    for path in (PROCESS.format(ref), f"/signserver/rest/v1/workers/{ref}/activate",
                 f"/signserver/rest/v1/workers/{ref}/deactivate"):
        r = client.post(path, content=b'{"data": "x", "authCode": "x"}')
        assert r.status_code == 404, (path[:80], r.status_code, r.text[:200])
        assert len(r.json()["error"]) < 300  # a 5,000-digit reference is not echoed whole
    assert server_errors(server.log()) == []


def test_fullwidth_digits_are_not_an_id(client: httpx.Client) -> None:
    # Worker 1 exists; "１" (U+FF11) and "¹" must not reach it.
    assert client.post(PROCESS.format("1"), content=b'{"data": "x"}').status_code == 200
    for ref in ("%EF%BC%91", "%C2%B9"):
        assert client.post(PROCESS.format(ref), content=b'{"data": "x"}').status_code == 404


def test_deeply_nested_json_and_lone_surrogates_are_400(client: httpx.Client, server: ServerProcess) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    r = client.post(PROCESS.format("Plain"), content=deep)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = client.post(PROCESS.format("Plain"), content=b'{"data": "x", "metaData": {"a": "\\ud800"}}')
    assert r.status_code == 400 and "lone surrogate" in r.json()["error"]
    r = client.post(PROCESS.format("Plain"), content=b'{"data": "x", "metaData": {"a\\u0000b": "v"}}')
    assert r.status_code == 400 and "control characters" in r.json()["error"]
    r = client.post(PROCESS.format("Plain"), content=b'{"data": "\\udfff"}')
    assert r.status_code == 400
    r = client.post("/signserver/rest/v1/workers/Plain/activate", content=b'{"authCode": ' + b"[" * 1000 + b"}")
    assert r.status_code == 400
    assert server_errors(server.log()) == []


# -- item 9: log injection ----------------------------------------------------------------------

def test_a_worker_name_cannot_forge_a_log_line(client: httpx.Client, server: ServerProcess) -> None:
    forged = "x%0A2026-01-01 00:00:00,000 INFO signpeer.worker: request_id=1 worker=Plain client='cert:CN=root-admin'" \
             " outcome=SUCCESS%00%0D%E2%80%A8"
    r = client.post(PROCESS.format(forged), content=b'{"data": "x"}')
    assert r.status_code == 404
    # The worker log line is written by the server's log writer, a moment after the answer.
    wait_until(lambda: "CN=root-admin" in server.log(), timeout=30, what="the refused request's worker log line")
    log = server.log()
    assert "\x00" not in log and "\r" not in log and "\u2028" not in log
    for line in log.splitlines():
        if line and not line.startswith((" ", "Traceback")):
            assert LINE.match(line), line
    assert "CN=root-admin" in log  # the value is there, but inside the one line it belongs to
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())


def test_control_characters_in_names_and_keys_are_refused(signpeer, home: Path) -> None:
    for args in (("setproperty", "5", "NAME", "evil\nname"), ("setproperty", "5", "NAME", "nul\x01"),
                 ("setproperty", "5", "A\u2028B", "v")):
        code, out, err = signpeer.in_process(*args)
        assert code != 0 and "control characters" in err, (args, out, err)
    code, out, err = signpeer.in_process("getconfig", "5")
    assert code != 0  # nothing was created


def test_escape_controls_leaves_one_printable_line() -> None:
    assert escape_controls("a\nb\x00c\u2028\ud800") == "a\\x0ab\\x00c\\u2028\\ud800"
    assert escape_controls("Grüße, 名前") == "Grüße, 名前"


@given(st.text())
def test_escaped_text_is_always_one_encodable_line(text: str) -> None:
    escaped = escape_controls(text)
    escaped.encode("utf-8")  # no lone surrogate is left
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in escaped), escaped


# -- item 8: the command line -------------------------------------------------------------------

def test_cli_refuses_unicode_digits_and_huge_ids(signpeer, home: Path) -> None:
    for args in (("getstatus", "complete", "²"), ("getconfig", "1" * 5000), ("setproperty", "1" * 5000, "A", "b"),
                 ("reload", "²"), ("removeproperty", "²", "A"), ("activatecryptotoken", "²", "x"),
                 ("auditlog", "--worker", "９" * 30)):
        code, out, err = signpeer.in_process(*args)
        assert code != 0 and "Traceback" not in err, (args[:2], err[-500:])
        assert len(err) < 600
    code, out, err = signpeer.in_process("setproperty", "１０", "NAME", "Fullwidth")
    assert code != 0, out
    code, out, err = signpeer.in_process("getconfig", "10")
    assert code != 0  # "１０" did not create worker 10


def test_property_files_take_only_ascii_worker_ids(services) -> None:
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.storage import Admin

    admin = WorkerAdmin(services, Admin.cli())
    with pytest.raises(BadRequestError, match="no known prefix"):
        apply_property_text(admin, "WORKER１０.NAME=X\n")
    with pytest.raises(BadRequestError, match="over 2147483647"):
        apply_property_text(admin, f"WORKER{'1' * 5000}.NAME=X\n")
    with pytest.raises(BadRequestError, match="control characters"):
        apply_property_text(admin, "WORKER7.NAME=a\\nb\n")
    assert services.store.all_worker_properties() == {}


def test_serve_refuses_ports_outside_the_tcp_range(signpeer) -> None:
    for port in ("70000", "-1", "８４４３", "1" * 50):
        code, out, err = signpeer.in_process("serve", "--port", port)
        assert code != 0 and "not a TCP port" in err, (port, err)


# -- item 11: a client hanging up mid-body ------------------------------------------------------

def test_client_abort_is_logged_as_an_abort(server: ServerProcess, pki: PKI) -> None:
    conn = client_context(pki.ca_pem).wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                                   server_hostname="127.0.0.1")
    conn.sendall(b"POST " + PROCESS.format("Plain").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                 b"X-Keyfactor-Requested-With: 1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    conn.settimeout(10)
    assert conn.recv(100).startswith(b"HTTP/1.1 100")  # the server reads the body now
    conn.sendall(b'{"data": "')
    conn.close()  # hang up mid-body
    wait_until(lambda: "outcome=ABORTED" in server.log(), 10, "the worker log's ABORTED line")
    log = server.log()
    assert "FAILED 500" not in log and "internal error" not in log and "Traceback" not in log


# -- totality, by hypothesis ---------------------------------------------------------------------

@given(st.text())
def test_worker_id_of_is_total_and_ascii_only(text: str) -> None:
    wid = worker_id_of(text)
    if wid is not None:
        assert 0 < wid <= MAX_WORKER_ID
        assert text.strip().isascii() and text.strip().isdigit()


@given(st.text())
def test_check_identifier_accepts_text_or_says_why(text: str) -> None:
    try:
        assert check_identifier(text, "NAME") == text
    except BadRequestError as exc:
        assert "control characters" in exc.message


_KEYS = st.sampled_from(["WORKER1.", "WORKER１.", "ID7.", "NAMEx.", "WORKERGENID1.", "GLOB.", "NODE.", "-WORKER2.",
                         "WORKER99999999999.", ""])
_LINES = st.builds(lambda k, p, sep, v: f"{k}{p}{sep}{v}", _KEYS,
                   st.text(max_size=12), st.sampled_from(["=", ":", " ", "\\u", "\\"]), st.text(max_size=20))


@given(st.lists(_LINES, max_size=6).map("\n".join) | st.text())
def test_property_file_parser_is_total(text: str) -> None:
    try:
        parse_properties(text)
    except BadRequestError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(_LINES, max_size=6).map("\n".join))
def test_applying_any_property_file_is_total(services, text: str) -> None:
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.storage import Admin

    try:
        apply_property_text(WorkerAdmin(services, Admin.cli()), text)
    except SignpeerError as exc:
        assert exc.status < 500, exc.message
    for props in services.store.all_worker_properties().values():
        assert not_text(props.get("NAME", "")) is None
    json.dumps(services.store.all_worker_properties())  # everything stored is text


def test_tls_client_abort_before_handshake_is_not_an_error(server: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a truncated ClientHello
    sock.close()
    with socket.create_connection(("127.0.0.1", server.port)) as plain:  # plain HTTP on the TLS port
        plain.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            plain.recv(100)
        except (ConnectionError, ssl.SSLError):
            pass
    assert server_errors(server.log()) == []


def test_the_limits_example_of_security_md_loads(tmp_path: Path) -> None:
    from signpeer_core.settings import load_settings

    text = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example is not None
    (tmp_path / "signpeer.toml").write_text(example.group(1))
    settings = load_settings(tmp_path)
    assert (settings.max_connections_per_address, settings.tls_handshake_timeout, settings.header_timeout,
            settings.body_timeout) == (2000, 20.0, 20.0, 120.0)


def test_key_aliases_with_control_characters_are_refused(services, pki: PKI) -> None:
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.storage import Admin

    add_signer(services, pki, "Aliases")
    admin = WorkerAdmin(services, Admin.cli())
    with pytest.raises(BadRequestError, match="control characters"):
        admin.generate_key("Aliases", "k\nforged", "ECDSA", "secp256r1")
    assert "k\nforged" not in services.runtime.get("Aliases").token.key_aliases()
