"""Many threads in one process, and two processes, on one token at once: signing with shared
keys while generating, using and removing other keys. Without the module lock this crashes
the process (python-pkcs11 + SoftHSM2); every signature must verify."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("stress_child.py")


def _child_module():
    spec = importlib.util.spec_from_file_location("stress_child", CHILD)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture
def shared_keys(hsm, token, alias):
    made = []
    for n, (keyalg, spec) in enumerate((("ECDSA", "secp256r1"), ("RSA", "2048"), ("Ed25519", ""))):
        token.generate_key(f"{alias}s{n}", keyalg, spec)
        made.append(f"{alias}s{n}")
    yield made
    for a in made:
        token.remove_key(a)


@pytest.mark.slow
def test_many_threads_in_one_process(hsm, shared_keys):
    # 4 s of load at least, then until the counts asserted below are reached (however slow the machine).
    result = _child_module().run(hsm.module, hsm.label, hsm.pin, "threads", 4.0, shared_keys,
                                 signer_threads=8, keygen_threads=3, min_signatures=501, min_removed=3)
    assert result["errors"] == [] and result["token_errors"] == []  # one process: nothing may be refused
    assert result["hidden"] == {}  # ... nor hidden: SoftHSM2's race needs a second process
    assert result["signatures"] > 500 and result["generated"] >= 3
    assert result["generated"] == result["removed"]
    assert not any(lb.startswith("threads-") for lb in re.findall(r"label:\s+(\S+)", hsm.list_objects()))


@pytest.mark.slow
def test_two_processes_on_one_token(hsm, token, shared_keys):
    procs = [subprocess.Popen([sys.executable, str(CHILD), hsm.module, hsm.label, hsm.pin, f"proc{i}", "4",
                               ",".join(shared_keys), "201", "1"], env=hsm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)  # a safety net: the children stop by themselves
        assert p.returncode == 0, f"exit {p.returncode}: {out}\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    hidden: set[str] = set()
    for r in results:
        # No crash and no wrong signature, ever. SoftHSM2's file store may refuse an operation now
        # and then while the other process writes (a clear error, not a crash): a few percent at most.
        assert r["errors"] == [] and r["signatures"] > 200 and r["removed"] >= 1
        assert len(r["token_errors"]) <= max(2, r["generated"] // 20), r["token_errors"]
        # SoftHSM2's own race (see stress_child.py): a key hidden from the process that made it.
        # Now and then, not as a rule: a token that lost its keys would hide most of them.
        assert len(r["hidden"]) <= max(3, r["generated"] // 4), r["hidden"]
        hidden |= set(r["hidden"])
    # A third process's view (pkcs11-tool, then this one) is consistent again: whatever is left is
    # a key its maker could not see or whose generation or removal the token refused, and it goes.
    refused = {m.split(":")[0].split(" ")[1] for r in results for m in r["token_errors"]}
    left = sorted({lb for lb in re.findall(r"label:\s+(\S+)", hsm.list_objects()) if lb.startswith("proc")})
    assert set(left) <= hidden | refused, (left, results)
    for alias in left:
        token.remove_key(alias)  # also takes a public key or certificate left without its private key
    remaining = [lb for lb in re.findall(r"label:\s+(\S+)", hsm.list_objects()) if lb.startswith("proc")]
    assert not remaining, (remaining, results)
