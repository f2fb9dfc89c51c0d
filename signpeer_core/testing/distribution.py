"""A plugin package's tests, run without installing the package.

signpeer finds plugins through their entry points, which ``importlib.metadata`` reads from an
installed distribution's ``*.dist-info``. :func:`discoverable` writes that metadata for a package
directory (``pyproject.toml`` and an ``src/`` layout) into a directory of its own and returns the
``PYTHONPATH`` that makes the package importable and its entry points visible, to this process's
children only: the current virtual environment stays as it is. :func:`run_pytest` runs the
package's tests that way, in a pytest subprocess in the package directory, so that what pytest
and every ``signpeer`` subprocess of the shared fixtures see is what ``pip install`` would give.
signpeer's tests use it for the example plugin of ``docs/writing-plugins.md`` and for the
skeleton of ``signpeer newplugin``; :func:`internal_core_imports` checks that such a package
imports only the public API of the core.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path


def discoverable(project: Path, site: Path) -> str:
    """Write ``<name>-<version>.dist-info`` (metadata and entry points from ``project/pyproject.toml``)
    into ``site``; returns the ``PYTHONPATH`` entries (``site`` and ``project/src``)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    dist = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    dist.mkdir(parents=True)
    requires = "".join(f"Requires-Dist: {req}\n" for req in meta.get("dependencies", []))
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
    groups = meta.get("entry-points", {})
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{ep} = {target}\n" for ep, target in entries.items()) + "\n"
        for group, entries in groups.items()))
    return os.pathsep.join([str(site), str(project / "src")])


def run_pytest(project: Path, site: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``project``'s tests in a subprocess (cwd ``project``), the package made
    :func:`discoverable` through ``site``; the environment's ``SIGNPEER_*`` settings are left out
    (the fixtures set what they need)."""
    path = discoverable(project, site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNPEER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def passed_count(output: str) -> int:
    """The number of passed tests in pytest's summary line (0 when none ran)."""
    found = re.search(r"(\d+) passed", output)
    return int(found.group(1)) if found else 0


def internal_core_imports(project: Path) -> list[str]:
    """``file:line: module`` for every import of ``signpeer_core`` in ``project``'s Python files other
    than the public API (``signpeer_core.api``) and the test kit (``signpeer_core.testing``)."""
    allowed = ("signpeer_core.api", "signpeer_core.testing")
    found: list[str] = []
    for path in sorted(project.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = ([f"signpeer_core.{alias.name}" for alias in node.names] if node.module == "signpeer_core"
                           else [node.module])
            else:
                continue
            found.extend(f"{path.relative_to(project)}:{node.lineno}: {module}" for module in modules
                         if module.split(".")[0] == "signpeer_core"
                         and not any(module == a or module.startswith(a + ".") for a in allowed))
    return found
