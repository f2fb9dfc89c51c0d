"""Import contracts: the core imports no plugin; a plugin's code imports only the public API of
the core (``signpeer_core.api``), its own modules and the libraries it declares; plugins import
no other plugin (they talk through hooks). Read from the source with ``ast``, so imports under
``if TYPE_CHECKING:`` and inside functions count too."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "signpeer_core"
PLUGINS = sorted(p.parent for p in (REPO / "plugins").glob("*/pyproject.toml"))
PUBLIC_CORE_MODULES = {"signpeer_core.api"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file; relative imports are resolved to absolute."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            assert node.module is not None
            if node.module == "signpeer_core":  # `from signpeer_core import api` is the module itself
                out.extend((node.lineno, f"signpeer_core.{alias.name}") for alias in node.names)
            else:
                out.append((node.lineno, node.module))
    return out


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "egg-info" not in str(p))


def _plugin_package(plugin: Path) -> tuple[str, Path]:
    (pkg,) = [p for p in (plugin / "src").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    return pkg.name, pkg


def _is_plugin_module(module: str) -> bool:
    top = module.split(".")[0]
    return top.startswith("signpeer_") and top != "signpeer_core"


def test_the_core_imports_no_plugin() -> None:
    bad = [f"{path.relative_to(REPO)}:{line}: {module}"
           for path in _sources(CORE) for line, module in _imports(path) if _is_plugin_module(module)]
    assert bad == []


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugin_imports_only_the_public_core_api_and_no_other_plugin(plugin: Path) -> None:
    own, pkg = _plugin_package(plugin)
    bad = []
    for path in _sources(pkg):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top == "signpeer_core" and module not in PUBLIC_CORE_MODULES:
                bad.append(f"{path.relative_to(REPO)}:{line}: {module} (import from signpeer_core.api)")
            elif _is_plugin_module(module) and top != own:
                bad.append(f"{path.relative_to(REPO)}:{line}: {module} (another plugin: use its hooks)")
    assert bad == []


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


#: Extras that only tools use; an optional feature's extra (e.g. ``opentelemetry``) declares what
#: its module imports.
_TOOL_EXTRAS = {"test", "lint"}


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra, listed in project.get("optional-dependencies", {}).items():
        if extra not in _TOOL_EXTRAS:
            requirements += listed
    return {_normalize(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _third_party(paths: list[Path], own: set[str]) -> dict[str, tuple[set[str], str]]:
    """Top-level module → (the distributions providing it, first place importing it), for every
    non-stdlib, non-own import. A namespace package (``opentelemetry``) has several."""
    dists = metadata.packages_distributions()
    found: dict[str, tuple[set[str], str]] = {}
    for path in paths:
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in own or top == "__future__":
                continue
            found.setdefault(top, ({_normalize(d) for d in dists.get(top, [top])},
                                   f"{path.relative_to(REPO)}:{line} ({module})"))
    return found


@pytest.mark.parametrize("package", [REPO, *PLUGINS], ids=lambda p: p.name if p != REPO else "signpeer-core")
def test_every_imported_library_is_declared(package: Path) -> None:
    if package == REPO:
        own, src = {"signpeer_core"}, CORE
        # The test kit is used by tests only; its libraries come with the [test] extra.
        paths = [p for p in _sources(src) if "testing" not in p.parts and p.name != "testing.py"]
    else:
        name, src = _plugin_package(package)
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{package.name} is not installed here (its libraries may not be either)")
        own, paths = {name}, _sources(src)
    declared = _declared(package / "pyproject.toml") | {"signpeer-core"}
    missing = {top: where for top, (dists, where) in _third_party(paths, own).items() if not dists & declared}
    assert missing == {}, f"declare these in {package.name}/pyproject.toml: {missing}"
