"""``signpeer newplugin``: the skeleton it writes passes its own test on the shared fixtures; it
refuses a directory in use and a name that is not one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from signpeer_core import API_VERSION
from signpeer_core.pluginskeleton import PluginNames
from signpeer_core.testing.distribution import internal_core_imports, passed_count, run_pytest
from signpeer_core.testing.fixtures import CliRunner


@pytest.mark.slow
def test_the_skeleton_passes_its_test(tmp_path: Path, signpeer: CliRunner) -> None:
    target = tmp_path / "stamp"
    result = signpeer.in_process("newplugin", "my-stamp", "--dir", str(target))
    assert result.code == 0, result.err
    assert "created signpeer-my-stamp" in result.out and "tests/test_plugin.py" in result.out
    project = tomllib.loads((target / "pyproject.toml").read_text())["project"]
    assert project["name"] == "signpeer-my-stamp"
    assert project["entry-points"]["signpeer"] == {"my-stamp": "signpeer_my_stamp.plugin"}
    assert any(dep.startswith("signpeer-core") for dep in project["dependencies"])
    plugin = (target / "src" / "signpeer_my_stamp" / "plugin.py").read_text()
    assert f'SIGNPEER_API_VERSION = "{API_VERSION}"' in plugin and "def signpeer_worker_types(" in plugin
    signer = (target / "src" / "signpeer_my_stamp" / "signer.py").read_text()
    assert "class MyStampSigner(PlainSigner)" in signer and 'type_name = "MyStampSigner"' in signer
    assert internal_core_imports(target) == []
    done = run_pytest(target, tmp_path / "site")
    assert done.returncode == 0 and passed_count(done.stdout) == 1, done.stdout[-5000:] + done.stderr[-3000:]


def test_the_default_directory_is_named_after_the_distribution(tmp_path: Path, signpeer: CliRunner,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert signpeer.in_process("newplugin", "signpeer-receipts").code == 0  # the prefix is accepted
    assert (tmp_path / "signpeer-receipts" / "src" / "signpeer_receipts" / "plugin.py").is_file()


def test_a_directory_with_files_is_refused(tmp_path: Path, signpeer: CliRunner) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = signpeer.in_process("newplugin", "stamp", "--dir", str(target))
    assert result.code == 1
    assert f"signpeer newplugin: {target} already exists and is not an empty directory" in result.err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert signpeer.in_process("newplugin", "stamp", "--dir", str(empty)).code == 0


@pytest.mark.parametrize("name", ["My_Stamp", "1stamp", "stamp-", "a--b", "stamp.x", "core", "x" * 41])
def test_a_bad_name_is_refused(tmp_path: Path, signpeer: CliRunner, name: str) -> None:
    result = signpeer.in_process("newplugin", name, "--dir", str(tmp_path / "p"))
    assert result.code == 1 and f"'{name}'" in result.err, result.err
    assert not (tmp_path / "p").exists()


def test_names() -> None:
    names = PluginNames.of("my-stamp2")
    assert (names.distribution, names.package, names.signer_class) == (
        "signpeer-my-stamp2", "signpeer_my_stamp2", "MyStamp2Signer")
