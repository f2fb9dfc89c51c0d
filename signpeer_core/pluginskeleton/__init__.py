"""The skeleton of a new plugin package, as ``signpeer newplugin`` writes it.

A plugin name (``receipts``, ``my-stamp``) gives the distribution (``signpeer-receipts``), the
import package (``signpeer_receipts``), the entry point (``receipts``) and a worker class
(``ReceiptsSigner``, a :class:`~signpeer_core.signers.PlainSigner` with a ``type_name`` of its
own). The files are the ``templates/*.tmpl`` package data, filled with :class:`string.Template`
(``${name}`` placeholders): a ``pyproject.toml`` with the entry point, the package with
``plugin.py`` (``SIGNPEER_API_VERSION``, one hook) and ``signer.py``, a README, and
``tests/test_plugin.py`` with one test on the shared fixtures that passes as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from signpeer_core import API_VERSION, __version__
from signpeer_core.errors import BadRequestError, ConflictError

#: Template file (in ``templates/``) -> path in the new package; ``{package}`` is the import package.
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "plugin.py.tmpl": "src/{package}/plugin.py",
    "signer.py.tmpl": "src/{package}/signer.py",
    "test_plugin.py.tmpl": "tests/test_plugin.py",
}

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_RESERVED = {"core"}  # signpeer-core itself


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin name gives."""

    name: str  #: e.g. "my-stamp"; also the entry point's name
    distribution: str  #: "signpeer-my-stamp"
    package: str  #: "signpeer_my_stamp"
    signer_class: str  #: "MyStampSigner" (also its type_name)

    @classmethod
    def of(cls, name: str) -> PluginNames:
        """Validate ``name`` (``signpeer-`` in front is accepted and dropped) and derive the others."""
        short = name.strip().removeprefix("signpeer-")
        if not _NAME.fullmatch(short) or len(short) > 40:
            raise BadRequestError(
                f"'{name}' is not a plugin name: use lower-case letters, digits and single hyphens, starting "
                "with a letter, at most 40 characters (e.g. receipts or my-stamp)")
        if short in _RESERVED:
            raise BadRequestError(f"'{name}' is taken by signpeer itself; choose another name")
        camel = "".join(part.capitalize() for part in short.split("-"))
        return cls(short, f"signpeer-{short}", f"signpeer_{short.replace('-', '_')}", f"{camel}Signer")


def render(names: PluginNames) -> dict[str, str]:
    """The skeleton's files: relative path -> text."""
    values = {
        "distribution": names.distribution, "package": names.package, "entry_point": names.name,
        "signer_class": names.signer_class, "type_name": names.signer_class, "api_version": API_VERSION,
        "core_version": __version__,
    }
    templates = resources.files(__name__).joinpath("templates")
    return {target.format(package=names.package): Template(templates.joinpath(source).read_text()).substitute(values)
            for source, target in FILES.items()}


def write_skeleton(name: str, target: Path) -> tuple[PluginNames, list[Path]]:
    """Write the skeleton of plugin ``name`` into ``target`` (made if missing; refused when it is
    a file or a directory with anything in it); returns the names and the files written."""
    names = PluginNames.of(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConflictError(f"{target} already exists and is not an empty directory; choose another one with --dir, "
                            "or remove it first")
    files = render(names)
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return names, written
