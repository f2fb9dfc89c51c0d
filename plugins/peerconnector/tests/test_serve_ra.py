"""``signpeer connector serve-ra`` without signpeer-onetimecrypto: one clear error, whatever the arguments.

With the plugin installed the action is the RA loop of ``signpeer ra serve``; its help and an
end-to-end run over TLS are tested with that plugin (plugins/onetimecrypto/tests/test_ra.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from signpeer_core.cli.base import CommandContext
from signpeer_core.cli.main import build_parser
from signpeer_peerconnector.cli import RA_MODE_MISSING, ConnectorCommand


@pytest.mark.parametrize("argv", [
    ["https://localhost:8443", "--cert", "c.pem", "--key", "k.pem", "--issuer-cert", "i.pem", "--issuer-key", "ik.pem"],
    ["--cert", "c.pem", "https://localhost:8443"],
    ["--help"],
    [],
])
def test_serve_ra_without_onetimecrypto_says_what_to_install(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    # A parser built without any plugin that provides serve-ra (no registry: no other plugin).
    args = build_parser({"connector": ConnectorCommand}).parse_args(["connector", "serve-ra", *argv])
    out, err = io.StringIO(), io.StringIO()
    ctx = CommandContext(home=str(tmp_path), registry=None, stdout=out, stderr=err)  # type: ignore[arg-type]
    assert args._command.run(args, ctx) == 1
    assert err.getvalue() == f"signpeer connector serve-ra: {RA_MODE_MISSING}\n"
    assert "install signpeer-onetimecrypto for RA mode" in err.getvalue() and out.getvalue() == ""
