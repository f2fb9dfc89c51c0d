"""The plugin guide (docs/writing-plugins.md) holds what it claims: its complete example plugin,
copied out of the page into a package of its own, passes its tests on the shared fixtures
without anything of signpeer's source beside it; the token example of plugin-hooks.md signs."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from signpeer_core.api import Admin, Caller, Services, TransportRequest, UnknownWorkerError, WorkerAdmin
from signpeer_core.plugins import EXTRA_ENV
from signpeer_core.testing import PKI, add_signer, open_services
from signpeer_core.testing.distribution import internal_core_imports, passed_count, run_pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLE_SECTION = "## A complete plugin: signpeer-receipts\n"


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def example_files() -> dict[str, str]:
    """The example plugin's files: every block after a line `` `path`: `` in its section."""
    section = _section((DOCS / "writing-plugins.md").read_text(), EXAMPLE_SECTION)
    return {path: body for path, body in re.findall(r"^`([\w./-]+)`:\n\n```\w*\n(.*?)^```$", section,
                                                    flags=re.M | re.S)}


def test_the_example_is_a_whole_package() -> None:
    files = example_files()
    assert {"pyproject.toml", "src/signpeer_receipts/plugin.py", "src/signpeer_receipts/signer.py",
            "src/signpeer_receipts/fileca.py", "tests/test_receipts.py"} <= set(files)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["entry-points"]["signpeer"] == {"receipts": "signpeer_receipts.plugin"}
    assert "class ReceiptSigner(PlainSigner)" in files["src/signpeer_receipts/signer.py"]
    assert "class FileCAConnector(CAConnector)" in files["src/signpeer_receipts/fileca.py"]


@pytest.mark.slow
def test_the_example_plugin_passes_its_tests_on_the_shared_fixtures(tmp_path: Path) -> None:
    """What a plugin author has: the page and signpeer-core installed, no signpeer conftest.py, the
    package made discoverable beside the environment (not installed into it)."""
    project = tmp_path / "signpeer-receipts"
    for relative, text in example_files().items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text)
    assert internal_core_imports(project) == []  # only signpeer_core.api (and the test kit in tests)
    done = run_pytest(project, tmp_path / "site", "-rs")
    output = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert passed_count(done.stdout) >= 6, output  # the last one skips without signpeer-onetimecrypto


def test_the_token_example_of_plugin_hooks_signs(tmp_path: Path, home: Path, pki: PKI,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """plugin-hooks.md's MemoryToken, as a plugin module, holds a signer's key: the test kit's
    ``add_signer`` makes the key in it, the pipeline signs, the certificate verifies the signature."""
    text = (DOCS / "plugin-hooks.md").read_text()
    block = re.search(r"```python\n(.*?)```", _section(text, "## signpeer_crypto_token_types\n"), flags=re.S)
    assert block is not None
    (tmp_path / "doc_memory_token.py").write_text(block.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(EXTRA_ENV, "doc_memory_token")  # open_services adds the test kit's plugin
    services = open_services(home)
    try:
        add_signer(services, pki, "Signer", CRYPTOTOKEN_IMPLEMENTATION_CLASS="MemoryToken", AUTHTYPE="NOAUTH")
        worker = services.runtime.get("Signer")
        assert type(worker.token).__name__ == "MemoryToken" and worker.status().active, worker.status().reasons
        signed = asyncio.run(services.pipeline.process("Signer", TransportRequest(b"doc"), Caller(transport="test")))
        public_key = worker.chain[0].public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signed.data, b"doc", ec.ECDSA(hashes.SHA256()))
    finally:
        services.close()


def test_what_the_services_section_promises(services: Services) -> None:
    """The calls of "What a plugin gets: services": a change through WorkerAdmin is active after
    reload, the registry tells installed types, state() keeps one object per class."""
    admin = WorkerAdmin(services, Admin("tests"))
    wid = admin.create_worker({"NAME": "Holder", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker"})
    with pytest.raises(UnknownWorkerError):
        services.runtime.get("Holder")  # stored, not active yet
    admin.set_property("Holder", "DISABLED", "true")
    admin.reload("all")
    assert services.runtime.get("Holder").id == wid and services.runtime.get(wid).disabled
    assert "PlainSigner" in services.registry.worker_types and "NoSuchSigner" not in services.registry.worker_types
    assert services.settings.path("ca.pem") == services.settings.home / "ca.pem"

    class Hub:
        pass

    assert services.state_if_any(Hub) is None
    assert services.state(Hub) is services.state(Hub) is services.state_if_any(Hub)
