"""The README's quick start runs as written in a fresh ``signpeer init`` data directory (the demo
workers sit at their own ids, so ``setproperty 1 …`` creates the README's workers), every worker
ends ACTIVE, and the one-time signer signs (the CMS verified by openssl against its own
self-signed certificate)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from signpeer_core.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
SIGNPEER = Path(sys.executable).parent / "signpeer"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SIGNPEER_")]:
        monkeypatch.delenv(var)


def quick_start_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Quick start (self-signed, soft token)", 1)[1]
    block = re.search(r"```\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("  #", 1)[0].strip()
        if line:
            words = shlex.split(line)
            assert words[0] == "signpeer", line
            commands.append(words[1:])
    return commands


def test_readme_quick_start_in_a_fresh_home(tmp_path: Path, capsys: Any) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    commands = quick_start_commands()
    assert len(commands) > 10
    for words in commands:
        code = main(["--home", str(home), *words])
        captured = capsys.readouterr()
        assert code == 0, (words, captured.err)
    assert main(["--home", str(home), "getstatus", "brief", "all"]) == 0
    out = capsys.readouterr().out
    for wid, name in ((1, "SoftSource"), (2, "OneTime"), (3, "OneTimeCMSSigner")):
        block = out.split(f"with ID {wid} ({name}) is:", 1)[1].split("Status of", 1)[0]
        assert "Worker status : Active" in block, out
    # The one-time signer signs: through the same pipeline every transport uses.
    import anyio

    from signpeer_core.pipeline import Caller, TransportRequest
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    services = Services.open(load_settings(home))
    try:
        result = anyio.run(services.pipeline.process, "OneTimeCMSSigner",
                           TransportRequest(b"readme", {}, "alice", None), Caller("tests", None, None))
    finally:
        services.close()
    (tmp_path / "out.p7s").write_bytes(result.data)
    done = subprocess.run(["openssl", "cms", "-verify", "-noverify", "-inform", "DER", "-in",
                           str(tmp_path / "out.p7s")], capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout == b"readme", done.stderr
