"""One-time keys in a real SoftHSM2 token, checked independently with ``pkcs11-tool``.

SoftHSM2 reads its configuration once per process, and the PKCS#11 token's own tests use
another token: so everything that loads the module runs in a subprocess here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
CHILD = Path(__file__).with_name("pkcs11_child.py")


@pytest.fixture
def softhsm(tmp_path: Path) -> dict[str, Any]:
    if shutil.which("softhsm2-util") is None or shutil.which("pkcs11-tool") is None or not Path(MODULE).exists():
        pytest.skip("SoftHSM2/OpenSC not installed: apt-get install -y softhsm2 opensc")
    root = tmp_path / "softhsm"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "onetime", "--pin", "1234",
                    "--so-pin", "5678"], check=True, capture_output=True, env=env)
    return {"env": env, "label": "onetime", "pin": "1234"}


def list_objects(hsm: dict[str, Any]) -> str:
    out = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", hsm["label"], "--login", "--pin",
                          hsm["pin"], "--list-objects"], env=hsm["env"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("storage, count", [("SESSION", 1000), ("TOKEN", 60)])
def test_no_one_time_key_left_in_the_token(softhsm: dict[str, Any], home: Path, pki: Any, tmp_path: Path,
                                           storage: str, count: int) -> None:
    out = subprocess.run([sys.executable, str(CHILD), str(home), MODULE, softhsm["label"], softhsm["pin"], str(count),
                          storage], env=softhsm["env"], capture_output=True, text=True, timeout=600, cwd=home)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(not r for r in summary["reasons"].values()), summary["reasons"]
    assert summary["source"] == ("SessionObjectKeys" if storage == "SESSION" else "TokenObjectKeys")
    outcomes = summary["outcomes"]
    assert outcomes.get("ok", 0) > count // 3 and outcomes.get("CARefusedError") and \
        outcomes.get("ServiceUnavailableError") and outcomes.get("cancelled"), outcomes
    assert sum(outcomes.values()) == count
    assert summary["live"] == 0
    assert summary["in_session"] == []  # what the server's own session still sees (session objects)
    listing = list_objects(softhsm)
    assert not re.findall(r"label:\s+onetime-", listing), listing
    # The signatures were made inside the token and verify against the CA.
    for sig_hex, data in summary["signatures"]:
        sig = tmp_path / "sig.p7m"
        sig.write_bytes(bytes.fromhex(sig_hex))
        v = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(sig), "-CAfile", str(pki.ca_pem),
                            "-purpose", "any"], capture_output=True)
        assert v.returncode == 0 and v.stdout == data.encode(), v.stderr
