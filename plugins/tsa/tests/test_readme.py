"""The README's extraction script and openssl commands work on a time-stamped CMS signature."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from signpeer_core.testing import add_signer
from signpeer_core.workers import SignRequest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_extract_script_and_openssl_commands(services: Any, pki: Any, kit: Any, tmp_path: Path) -> None:
    kit.add_tsa(services, pki)
    add_signer(services, pki, "CMS", implementation="CMSSigner", AUTHTYPE="NOAUTH", TSA_WORKER="TSA")
    signed = asyncio.run(services.runtime.get("CMS").process(SignRequest(data=b"readme", request_id="r1"))).data
    (tmp_path / "signature.p7m").write_bytes(signed)
    text = README.read_text()
    script = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(script) == 1
    (tmp_path / "extract.py").write_text(script[0])
    out = subprocess.run([sys.executable, "extract.py", "signature.p7m"], cwd=tmp_path, capture_output=True,
                         check=True)
    digest = out.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    verified = kit.openssl("ts", "-verify", "-digest", digest, "-in", str(tmp_path / "token.der"), "-token_in",
                           "-CAfile", str(pki.ca_pem))
    assert b"Verification: OK" in verified.stdout
    shown = kit.openssl("ts", "-reply", "-in", str(tmp_path / "token.der"), "-token_in", "-token_out", "-text")
    assert b"Time stamp: " in shown.stdout
    for command in ("openssl ts -verify -digest", "openssl ts -reply -in token.der -token_in -token_out -text",
                    "openssl cms -verify -inform DER -in signature.p7m -CAfile ca.pem -purpose any -attime"):
        assert command in text
