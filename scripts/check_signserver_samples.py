#!/usr/bin/env python3
"""Load SignServer's own sample material into signpeer as a SignServer administrator would, and
report per file what signpeer did.

    python scripts/check_signserver_samples.py [--samples DIR] [--work DIR] [--json FILE]

``--samples``: a copy of SignServer's ``sample-configs/`` and ``res-test/`` (default
``../shared/signserver-samples`` next to the checkout). Nothing is copied into the repository;
every data directory is made under ``--work`` (default: a temporary directory).

For each property file of ``sample-configs/`` and ``res-test/``, in a fresh ``signpeer init``
data directory:

1. the crypto worker of ``keystore-crypto.properties`` is set up first, as SignServer's sample
   signers expect (``CryptoTokenP12``), with ``KEYSTOREPATH`` pointing at a copy of SignServer's
   test keystore ``res-test/dss10/dss10_keystore.p12`` (password ``foo123``), as the quick start
   does with ``setproperty`` (the original file for ``keystore-crypto.properties``; for the others
   a copy signpeer read once and wrote in PBES2/AES, because reading the original's 24 legacy-PBE
   keys takes ~20 s per process);
2. ``signpeer setproperties <file>`` and ``signpeer reload all`` run (exit code and warnings kept);
3. each worker the file made is looked at: ACTIVE, or why not (a type signpeer lacks says so);
4. each ACTIVE signer signs a document; PlainSigner signatures are checked by ``openssl dgst``
   with the signer certificate's key, CMSSigner output by ``openssl cms -verify`` against
   SignServer's test CAs (``DSSRootCA10``, ``DSSSubCA11``).

The report is printed as a table; ``--json`` also writes it for tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO.parent / "shared" / "signserver-samples"
DOCUMENT = b"signpeer checks SignServer's samples\n"


@dataclass
class WorkerReport:
    id: int
    name: str
    implementation: str
    status: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    signed: str = ""  # "verified by openssl ..." / "" / the failure


@dataclass
class FileReport:
    file: str
    setproperties_exit: int
    output: str
    workers: list[WorkerReport] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.setproperties_exit != 0:
            return f"refused (exit {self.setproperties_exit}): {self.output.strip().splitlines()[-1:]}"
        parts = []
        for w in self.workers:
            if w.status == "ACTIVE":
                parts.append(f"{w.name}: ACTIVE" + (f", {w.signed}" if w.signed else ""))
            else:
                parts.append(f"{w.name}: OFFLINE ({'; '.join(w.reasons)[:160]})")
        return " | ".join(parts) or "no workers"


@dataclass
class Result:
    """What one ``signpeer`` command did (run in this process: a subprocess per command costs
    seconds on a loaded machine)."""

    returncode: int
    stdout: str
    stderr: str


def run(home: Path, *args: str) -> Result:
    import contextlib
    import io

    from signpeer_core.cli.main import main as signpeer

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = signpeer(["--home", str(home), *args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def fresh_home(work: Path, name: str, samples: Path, original_keystore: bool = False) -> Path:
    """A copy of one ``signpeer init --empty`` data directory, with the test keystore."""
    template = work / "template"
    if not template.exists():
        done = run(template, "init", "--empty")
        if done.returncode != 0:
            raise SystemExit(f"signpeer init failed: {done.stderr}")
        # SignServer's test keystore has 24 keys under PBE with 51 200 iterations: reading it takes
        # ~20 s. It is read once here (by signpeer's own reader) and written in PBES2/AES for the
        # other checks; keystore-crypto.properties is checked with the original file.
        from signpeer_softtoken.pkcs12 import dump_keystore, load_keystore

        original = (samples / "res-test" / "dss10" / "dss10_keystore.p12").read_bytes()
        (template / "dss10_keystore.p12").write_bytes(dump_keystore(load_keystore(original, "foo123"), "foo123"))
    home = work / name
    shutil.copytree(template, home)
    if original_keystore:
        shutil.copy(samples / "res-test" / "dss10" / "dss10_keystore.p12", home / "dss10_keystore.p12")
    return home


def setup_keystore_worker(home: Path, samples: Path) -> None:
    """SignServer's keystore-crypto sample, pointed at the test keystore (as its quick start does)."""
    for args in (("setproperties", str(samples / "sample-configs" / "keystore-crypto.properties")),
                 ("setproperty", "CryptoTokenP12", "KEYSTOREPATH", str(home / "dss10_keystore.p12")),
                 ("setproperty", "CryptoTokenP12", "KEYSTOREPASSWORD", "foo123")):
        done = run(home, *args)
        if done.returncode != 0:
            raise SystemExit(f"setting up CryptoTokenP12 failed: {done.stderr}")


def sign_and_verify(home: Path, worker: dict[str, Any], samples: Path, work: Path) -> str:
    """Sign through signpeer's pipeline (as every transport does) and check the result with openssl."""
    import base64

    import anyio
    from cryptography.hazmat.primitives.serialization import Encoding

    from signpeer_core.errors import SignpeerError
    from signpeer_core.pipeline import Caller, TransportRequest
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    services = Services.open(load_settings(str(home)))
    try:
        result = anyio.run(services.pipeline.process, str(worker["id"]), TransportRequest(DOCUMENT, {}, None, None),
                           Caller("samples", None, None))
    except SignpeerError as exc:
        return f"signing failed: {exc.message}"
    finally:
        services.close()
    data_b64 = base64.b64encode(result.data).decode()
    assert result.signer_certificate is not None
    cert_b64 = base64.b64encode(result.signer_certificate.public_bytes(Encoding.DER)).decode()
    out = work / f"out-{worker['id']}"
    out.mkdir(exist_ok=True)
    (out / "doc").write_bytes(DOCUMENT)
    (out / "sig").write_bytes(base64.b64decode(data_b64))
    (out / "cert.der").write_bytes(base64.b64decode(cert_b64))
    cas = out / "cas.pem"
    cas.write_bytes(b"".join((samples / "res-test" / "dss10" / name).read_bytes()
                             for name in ("DSSRootCA10.cacert.pem", "DSSSubCA11.cacert.pem")))
    if worker["implementation"] == "CMSSigner":
        verify = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(cas), "-inform", "DER", "-in",
                                 str(out / "sig"), "-purpose", "any"], capture_output=True, timeout=60)
        ok = verify.returncode == 0 and verify.stdout == DOCUMENT
        return "signed, verified by openssl cms -verify (DSS test CAs)" if ok else \
            f"signature NOT verified: {verify.stderr.decode().strip()[:200]}"
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(out / "cert.der"), "-pubkey", "-noout",
                    "-out", str(out / "pub.pem")], check=True, capture_output=True, timeout=60)
    verify = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(out / "pub.pem"), "-signature",
                             str(out / "sig"), str(out / "doc")], capture_output=True, timeout=60)
    ok = verify.returncode == 0 and b"Verified OK" in verify.stdout
    return "signed, verified by openssl dgst -verify" if ok else \
        f"signature NOT verified: {verify.stderr.decode().strip()[:200]}"


def check_file(path: Path, samples: Path, work: Path, index: int) -> FileReport:
    is_keystore_sample = path.name == "keystore-crypto.properties"
    home = fresh_home(work, f"home{index:02d}", samples, original_keystore=is_keystore_sample)
    if not is_keystore_sample:
        setup_keystore_worker(home, samples)
    before = {w["id"] for w in json.loads(run(home, "getstatus", "brief", "all", "--json").stdout or "[]")}
    done = run(home, "setproperties", str(path))
    report = FileReport(str(path.relative_to(samples)), done.returncode, done.stdout + done.stderr)
    if is_keystore_sample and done.returncode == 0:
        run(home, "setproperty", "CryptoTokenP12", "KEYSTOREPATH", str(home / "dss10_keystore.p12"))
        run(home, "setproperty", "CryptoTokenP12", "KEYSTOREPASSWORD", "foo123")
    run(home, "reload", "all")
    listing = json.loads(run(home, "getstatus", "brief", "all", "--json").stdout or "[]")
    config = {w["id"]: w for w in json.loads(run(home, "getstatus", "complete", "all", "--json").stdout or "[]")}
    for entry in listing:
        if entry["id"] in before:
            continue
        props = config.get(entry["id"], {}).get("properties", {})
        impl = props.get("IMPLEMENTATION_CLASS", "").rsplit(".", 1)[-1]
        text = run(home, "getstatus", "brief", str(entry["id"])).stdout
        warnings = [line.strip()[2:] for line in text.split("Warnings:", 1)[1].splitlines() if line.strip()] \
            if "Warnings:" in text else []
        worker = WorkerReport(entry["id"], entry["name"], impl, entry["status"], entry["reasons"], warnings)
        if entry["status"] == "ACTIVE" and impl in ("CMSSigner", "PlainSigner"):
            worker.signed = sign_and_verify(home, {**entry, "implementation": impl}, samples, work / f"home{index:02d}")
        report.workers.append(worker)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--only", nargs="*", help="check only these file names (e.g. cmssigner.properties)")
    args = parser.parse_args(argv)
    samples: Path = args.samples
    if not (samples / "sample-configs").is_dir():
        print(f"no SignServer samples at {samples}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="signserver-samples-"))
    files = sorted((samples / "sample-configs").glob("*.properties")) + sorted((samples / "res-test").glob("*.properties"))
    if args.only:
        files = [f for f in files if f.name in args.only]
    reports = []
    for i, path in enumerate(files):  # one line per file as soon as it is checked
        report = check_file(path, samples, work, i)
        reports.append(report)
        print(f"{report.file:<45}  {report.summary}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "summary": r.summary} for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
