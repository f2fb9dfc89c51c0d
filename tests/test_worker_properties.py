"""Unknown worker properties are named (setproperty, setproperties, getstatus), and
docs/worker-properties.md is the table the code generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from signpeer_core.cli.main import main
from signpeer_core.plugins import Registry
from signpeer_core.workerproperties import properties_table, unknown_properties

DOC = Path(__file__).resolve().parents[1] / "docs" / "worker-properties.md"
ALL_PLUGINS = ("SoftCryptoToken", "Pkcs11CryptoToken", "OneTimeCryptoWorker")


def test_the_docs_table_is_generated_from_the_code() -> None:
    registry = Registry()
    known = set(registry.token_types.primary) | set(registry.worker_types.primary)
    if not all(name in known for name in ALL_PLUGINS):
        pytest.skip("the table lists every plugin's types; not all plugins are installed here")
    assert DOC.read_text() == properties_table(registry), \
        "docs/worker-properties.md is stale: python -m signpeer_core.workerproperties > docs/worker-properties.md"


def test_unknown_properties_of_a_signer() -> None:
    registry = Registry()
    props = {"NAME": "S", "IMPLEMENTATION_CLASS": "org.signserver.module.cmssigner.CMSSigner", "DEFAULTKEY": "k",
             "DETACHEDSIGNATURE": "true", "USER.alice": "x", "LOGREQUEST_DIGESTALGORITHM": "SHA256", "Foo": "1"}
    assert unknown_properties(props, registry) == ["FOO", "LOGREQUEST_DIGESTALGORITHM"]
    # A type signpeer lacks: no guessing (its error says what is wrong).
    assert unknown_properties({"NAME": "T", "IMPLEMENTATION_CLASS": "org.signserver.module.xades.signer.XAdESSigner",
                               "X": "1"}, registry) == []


def test_cli_names_unknown_properties(home: Path, capsys: Any) -> None:
    def run(*args: str) -> tuple[int, str]:
        code = main(["--home", str(home), *args])
        return code, capsys.readouterr().out

    code, out = run("setproperty", "40", "NAME", "Warned")
    assert code == 0 and "Warning" not in out
    run("setproperty", "40", "IMPLEMENTATION_CLASS", "PlainSigner")
    code, out = run("setproperty", "40", "DO_LOGREQUEST_DIGEST", "true")
    assert code == 0 and "Warning: property DO_LOGREQUEST_DIGEST is not used by signpeer for worker 'Warned'" in out
    code, out = run("setproperty", "40", "DEFAULTKEY", "k1")
    assert code == 0 and "Warning" not in out
    props = home.parent / "w.properties"
    props.write_text("WORKER40.TYPO_PROPERTY=1\n")
    code, out = run("setproperties", str(props))
    assert code == 0 and "property TYPO_PROPERTY is not used" in out
    run("reload", "all")
    code, out = run("getstatus", "brief", "Warned")
    assert code == 0 and "   Warnings:" in out and "DO_LOGREQUEST_DIGEST" in out and "TYPO_PROPERTY" in out
    # The type signpeer lacks says so in getstatus.
    run("setproperty", "41", "NAME", "Xades")
    run("setproperty", "41", "IMPLEMENTATION_CLASS", "org.signserver.module.xades.signer.XAdESSigner")
    run("reload", "all")
    code, out = run("getstatus", "brief", "Xades")
    assert "(SignServer's XAdESSigner): this type is not available in signpeer" in out
