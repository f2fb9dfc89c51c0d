"""Docs stay in step with the code: every hook has its section, and its example compiles; the
test example of writing-plugins.md passes."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

from signpeer_core import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("signpeer_")]


def test_every_hook_has_a_section_with_an_example() -> None:
    text = (DOCS / "plugin-hooks.md").read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    missing = [name for name in _hook_names() if name not in sections]
    assert not missing, f"hooks without a section in docs/plugin-hooks.md: {missing}"
    for name in _hook_names():
        assert f"def {name}(" in sections[name], f"the example of {name} does not implement it"


def test_hook_examples_register_as_plugins() -> None:
    """Each example is a working plugin: registered next to the built-ins, its types appear."""
    import types

    from signpeer_core.plugins import Registry, get_plugin_manager

    text = (DOCS / "plugin-hooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= len(_hook_names())
    pm = get_plugin_manager(load_entry_points=False)
    for i, block in enumerate(blocks):
        module = types.ModuleType(f"doc_example_{i}")
        exec(compile(block, f"plugin-hooks.md example {i}", "exec"), module.__dict__)
        pm.register(module, name=module.__name__)
    pm.check_pending()
    registry = Registry(pm)
    assert "MemoryToken" in registry.token_types
    assert "ReverseSigner" in registry.worker_types
    assert "MyCAConnector" in registry.ca_connectors
    assert "StaticToken" in registry.authorizer_types
    assert "countworkers" in registry.cli_commands()


def test_every_hookspec_is_documented_in_code() -> None:
    for name in _hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"{name} needs a real docstring"


def test_every_error_class_is_in_the_plugin_guide_with_its_status_and_exit_code() -> None:
    from signpeer_core import errors
    from signpeer_core.issuing import IssuingError

    text = (DOCS / "writing-plugins.md").read_text()
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^\| `(\w+)`[^|]*\| (\d+) \| (\d+) \|", text, flags=re.M)}
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.SignpeerError)]
    for cls in [*classes, IssuingError]:
        assert rows.get(cls.__name__) == (cls.status, cls.exit_code), f"{cls.__name__} in docs/writing-plugins.md"


def test_the_migrations_example_makes_its_table(tmp_path: Path) -> None:
    """The ``signpeer_migrations`` example: its revision script migrates, its plugin writes and reads."""
    import types

    from signpeer_core.plugins import Registry, get_plugin_manager
    from signpeer_core.storage import open_store

    text = (DOCS / "plugin-hooks.md").read_text()
    section = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))["signpeer_migrations"]
    plugin_source, revision_source = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "example_notes_0001.py").write_text(revision_source)
    plugin = types.ModuleType("notes_example")
    plugin.__file__ = str(tmp_path / "plugin.py")
    exec(compile(plugin_source, "plugin-hooks.md signpeer_migrations", "exec"), plugin.__dict__)
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="notes_example")
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", Registry(pm).migration_sources())
    try:
        services = types.SimpleNamespace(store=store)
        plugin.add_note(services, 3, "renew before May")
        assert plugin.notes_of(services, 3) == ["renew before May"]
    finally:
        store.close()


def test_route_example_in_writing_plugins_registers() -> None:
    """The "route that signs" example of writing-plugins.md is a plugin (tests/test_pipeline.py
    runs it against real workers)."""
    import types

    from signpeer_core.plugins import get_plugin_manager

    text = (DOCS / "writing-plugins.md").read_text()
    section = text.split("## A route that signs: call the pipeline", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None and "services.pipeline.process(" in block.group(1)
    module = types.ModuleType("doc_route_example")
    exec(compile(block.group(1), "writing-plugins.md route example", "exec"), module.__dict__)
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(module, name=module.__name__)
    pm.check_pending()
    routes = module.signpeer_routes(services=None)
    assert [r.path for r in routes] == ["/example/v1/sign/{worker}"]


def test_the_testing_example_of_writing_plugins_passes(tmp_path: Path) -> None:
    """The example test module runs as a plugin author would run it: in a directory of its own
    (no signpeer conftest.py), with only the fixtures pytest loads from signpeer-core."""
    text = (DOCS / "writing-plugins.md").read_text()
    section = text.split("## Testing your plugin\n", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_signing.py").write_text(example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNPEER_")}  # the fixtures set what they need
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                           "tests"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout[-5000:] + done.stderr[-2000:]
