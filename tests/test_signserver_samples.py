"""SignServer's own material against signpeer (read from ``../shared/signserver-samples`` when it is
there; skipped otherwise, nothing of it is copied into the repository):

* SignServer's quick-start command list (``doc-extracted/Quick_Start_Demo_Setup_using_Administration_CLI.commands.txt``)
  runs in order against a fresh ``signpeer init`` data directory and ends with a signature that
  openssl verifies against SignServer's test CAs;
* ``scripts/check_signserver_samples.py`` loads every sample and res-test property file and
  reports per file what signpeer did (with ``SIGNSERVER_SAMPLES_CHECK=1``: it takes minutes).

Fixtures of our own that always run are in test_propertyforms.py, test_rest_compat.py,
test_worker_properties.py and the soft token's test_legacy_pkcs12.py / test_init_demo.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from signpeer_core.cli.main import main
from signpeer_core.pipeline import Caller, TransportRequest
from signpeer_core.services import Services
from signpeer_core.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("SIGNPEER_SIGNSERVER_SAMPLES", REPO.parent / "shared" / "signserver-samples"))
QUICK_START = SAMPLES / "doc-extracted" / "Quick_Start_Demo_Setup_using_Administration_CLI.commands.txt"

pytestmark = pytest.mark.skipif(not (SAMPLES / "sample-configs").is_dir(),
                                reason=f"SignServer's sample material is not at {SAMPLES}")

#: The quick start's placeholder "CONFIGURATION.properties" stands for the signer the reader picks;
#: this run picks SignServer's CMS signer sample.
PLACEHOLDER = {"CONFIGURATION.properties": "cmssigner.properties"}
#: Lines that are not signpeer commands: signclient's timestamp client (signpeer has no TSA), a
#: shell ``cat`` of certificates an external CA issued, and EJBCA's client toolbox.
NOT_SIGNPEER = ("bin/signclient", "cat ", "ejbcaClientToolBox")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SIGNPEER_")]:
        monkeypatch.delenv(var)


def quick_start_lines() -> list[tuple[int, str]]:
    block, lines = -1, []
    for raw in QUICK_START.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# block"):
            block = int(line.split()[-1])
        elif line and not line.startswith("#"):
            lines.append((block, line.removeprefix("$ ").strip()))
    return lines


def run(home: Path, words: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(["--home", str(home), *words])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue()


def converted_keystore(target: Path) -> None:
    """SignServer's test keystore, read once by signpeer's reader (legacy RC2-40 and PBE with 51 200
    iterations: ~20 s) and written in PBES2/AES, so that each command's process does not spend
    that again. Reading the original file is also what this proves."""
    from signpeer_softtoken.pkcs12 import dump_keystore, load_keystore

    original = (SAMPLES / "res-test" / "dss10" / "dss10_keystore.p12").read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(dump_keystore(load_keystore(original, "foo123"), "foo123"))


def test_quick_start_command_list_in_a_fresh_init_home(tmp_path: Path) -> None:
    pytest.importorskip("signpeer_softtoken")
    home = tmp_path / "home"
    signserver_home = tmp_path / "signserver"
    converted_keystore(signserver_home / "res" / "test" / "dss10" / "dss10_keystore.p12")
    assert run(home, ["init"])[0] == 0
    report: list[tuple[int, str, int, str]] = []
    for block, line in quick_start_lines():
        if line.startswith(NOT_SIGNPEER):
            report.append((block, line, -1, "not a signpeer command"))
            continue
        words = shlex.split(line.replace("$SIGNSERVER_HOME", str(signserver_home)))
        assert words[0] == "bin/signserver", line
        words = words[1:]
        for i, word in enumerate(words):
            if word.startswith("doc/sample-configs/"):
                name = word.split("/")[-1]
                words[i] = str(SAMPLES / "sample-configs" / PLACEHOLDER.get(name, name))
        code, out = run(home, words)
        assert code in (0, 254, 255), (line, code, out)
        assert "Traceback" not in out, out
        report.append((block, line, code, out.strip().splitlines()[-1] if out.strip() else ""))
    text = "\n".join(f"block {b:>2} exit {c:>3}  {line}\n             {last[:200]}" for b, line, c, last in report)
    print(text)  # the per-command report (pytest -s shows it)

    outcomes = {(b, line.split()[1] if line.startswith("bin/") else line): c for b, line, c, _ in report}
    # The crypto worker and the CMS signer load, reload and become ACTIVE with the test keystore.
    assert outcomes[(0, "setproperties")] == 0 and outcomes[(1, "reload")] == 0
    assert outcomes[(2, "setproperties")] == 0 and outcomes[(3, "reload")] == 0
    assert outcomes[(11, "reload")] == 0
    # Loading keystore-crypto.properties again: CryptoTokenP12 exists, refused as in SignServer.
    again = next(last for b, line, _, last in report if b == 4)
    assert outcomes[(4, "setproperties")] == 254 and "CryptoTokenP12" in again
    # The quick start's time-stamp signer runs on signpeer-tsa with the quick start's keystore key.
    code, out = run(home, ["getstatus", "brief", "TimeStampSigner"])
    assert code == 0 and "Worker status : Active" in out, out
    code, out = run(home, ["getstatus", "brief", "CMSSigner"])
    assert code == 0 and "Worker status : Active" in out, out

    # It ends with a signature openssl verifies against SignServer's test CAs.
    services = Services.open(load_settings(home))
    try:
        result = anyio.run(services.pipeline.process, "CMSSigner", TransportRequest(b"quick start", {}, None, None),
                           Caller("tests", None, None))
    finally:
        services.close()
    (tmp_path / "signed.p7s").write_bytes(result.data)
    cas = tmp_path / "cas.pem"
    cas.write_bytes(b"".join((SAMPLES / "res-test" / "dss10" / n).read_bytes()
                             for n in ("DSSRootCA10.cacert.pem", "DSSSubCA11.cacert.pem")))
    done = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(cas), "-purpose", "any", "-inform", "DER",
                           "-in", str(tmp_path / "signed.p7s")], capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout == b"quick start", done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SIGNSERVER_SAMPLES_CHECK") != "1",
                    reason="35 data directories, minutes on a loaded machine: set SIGNSERVER_SAMPLES_CHECK=1")
def test_every_sample_file_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("signpeer_softtoken")
    report_file = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_signserver_samples.py"), "--samples",
                           str(SAMPLES), "--work", str(tmp_path / "work"), "--json", str(report_file)],
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    reports = {r["file"]: r for r in json.loads(report_file.read_text())}
    files = {f"sample-configs/{p.name}" for p in (SAMPLES / "sample-configs").glob("*.properties")} | \
        {f"res-test/{p.name}" for p in (SAMPLES / "res-test").glob("*.properties")}
    assert set(reports) == files
    by_impl: dict[str, list[dict[str, Any]]] = {}
    for r in reports.values():
        for w in r["workers"]:
            by_impl.setdefault(w["implementation"], []).append(w)
    # The implemented signers are ACTIVE with SignServer's test keystore and their output verifies.
    for impl in ("CMSSigner", "PlainSigner"):
        assert by_impl[impl], impl
        for w in by_impl[impl]:
            if w["name"] in ("CMSSigner", "PlainSigner"):
                assert w["status"] == "ACTIVE" and w["signed"].startswith("signed, verified"), w
    # The keystore crypto worker, with SignServer's original keystore file.
    p12 = reports["sample-configs/keystore-crypto.properties"]["workers"]
    assert [w["status"] for w in p12] == ["ACTIVE"]
    # A type signpeer lacks says so.
    xades = reports["sample-configs/xadessigner.properties"]["workers"][0]
    assert xades["status"] == "OFFLINE" and any("not available in signpeer" in r for r in xades["reasons"])
