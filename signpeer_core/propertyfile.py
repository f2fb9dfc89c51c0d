"""SignServer property files: load them as they are (``setproperties``) and write them (``dumpproperties``).

Syntax is Java's ``.properties``: ``#``/``!`` comment lines, ``key=value``, ``key: value`` or
``key value``, backslash line continuations, escapes (``\\t``, ``\\n``, ``\\uXXXX``, ``\\=``, ...).
One deliberate difference: a ``#`` preceded by whitespace starts a comment, because SignServer's
own documentation and sample files annotate lines that way (``KEYSTORETYPE=PKCS12  # or INTERNAL``);
write ``\\#`` for a literal one. Files are read as UTF-8, falling back to ISO-8859-1 (Java's
encoding for property files); dumps escape non-ASCII characters as ``\\uXXXX`` so both read them.

Key prefixes (case-insensitive), as SignServer's ``setproperties``:

* ``WORKERGENID<n>.KEY`` — a new worker; the same ``n`` is the same worker within the file, and
  every ``GENID<n>`` in a value becomes the id it was given;
* ``WORKER<id>.KEY`` or ``ID<id>.KEY`` — the worker with that id (created when it does not exist);
* ``NAME<name>.KEY`` — the worker with that name, created with a new id when there is none;
* ``GLOB.KEY`` and ``NODE.KEY`` — global properties for every node, or for this node;
* a leading ``-`` removes the property instead (the value is ignored).

A file is applied in one transaction (:func:`signpeer_core.administration.stage`: every change
with its audit records, active after ``signpeer reload``): any error (syntax, unknown prefix, a duplicate worker
name) changes nothing. Dumps use ``WORKER<id>.`` and ``GLOB.``/``NODE.``, so loading a dump back
gives the same configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from signpeer_core.administration.publishing import Change, stage
from signpeer_core.audit import GLOBAL_CONFIG, WORKER_CONFIG, AuditEvent, config_diff, is_secret_key
from signpeer_core.errors import BadRequestError, ConflictError
from signpeer_core.identifiers import MAX_WORKER_ID, check_identifier, not_text, shorten

if TYPE_CHECKING:
    from signpeer_core.admin import WorkerAdmin

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass(frozen=True)
class Entry:
    """One property of a file: its line, key and value."""

    line: int
    key: str
    value: str


def _unescape(text: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(text):
            break
        ch = text[i]
        if ch == "u":
            digits = text[i + 1:i + 5]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise BadRequestError(f"line {line}: malformed \\uXXXX escape '\\u{digits}'")
            out.append(chr(int(digits, 16)))
            i += 5
            continue
        out.append(_ESCAPES.get(ch, ch))
        i += 1
    joined = "".join(out)
    try:  # \uD83D\uDE00 (a surrogate pair, as Java writes non-BMP characters) is one character
        return joined.encode("utf-16-be", "surrogatepass").decode("utf-16-be")
    except UnicodeDecodeError:
        raise BadRequestError(f"line {line}: unpaired surrogate in a \\u escape") from None


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Java's logical lines: comments dropped, continuations (odd trailing backslashes) joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0 or i >= len(lines):
                if trailing % 2 == 1:
                    line = line[:-1]
                break
            line = line[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        yield start + 1, line


def _strip_inline_comment(raw: str) -> str:
    """Cut at an unescaped ``#`` preceded by whitespace (see the module docstring)."""
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "#" and i > 0 and raw[i - 1] in " \t":
            return raw[:i]
    return raw


def parse_properties(text: str) -> list[Entry]:
    """The entries of a ``.properties`` text in file order (duplicates kept: the last wins)."""
    entries: list[Entry] = []
    for number, line in _logical_lines(text):
        i, escaped = 0, False
        while i < len(line):
            ch = line[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch in "=: \t\f":
                break
            i += 1
        raw_key, rest = line[:i], line[i:]
        # After the key: whitespace, then at most one separator, then whitespace.
        rest = rest.lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        value = _unescape(_strip_inline_comment(rest).rstrip(" \t\f"), number)
        entries.append(Entry(number, _unescape(raw_key, number), value))
    return entries


def read_property_file(path: str | Path) -> str:
    """A property file's text: UTF-8, else ISO-8859-1 (what Java's ``Properties.load`` assumes)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise BadRequestError(f"no such property file: {p}") from None
    except OSError as exc:
        raise BadRequestError(f"cannot read property file {p}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# -- applying -------------------------------------------------------------------------------
_WORKER_KEY = re.compile(r"^(WORKERGENID|WORKER|ID)([0-9]+)\.(.+)$", re.IGNORECASE | re.ASCII)
_NAME_KEY = re.compile(r"^NAME([^.]+)\.(.+)$", re.IGNORECASE)
_GENID = re.compile(r"GENID([0-9]{1,10})", re.IGNORECASE | re.ASCII)


@dataclass
class PropertyFileResult:
    """What applying a file did, for the CLI to print."""

    messages: list[str] = field(default_factory=list)
    created: dict[str, int] = field(default_factory=dict)  # "WORKERGENID1"/"NAMEfoo" -> new id
    workers_changed: list[int] = field(default_factory=list)
    globals_changed: list[str] = field(default_factory=list)


def apply_property_text(admin: WorkerAdmin, text: str) -> PropertyFileResult:
    """Apply a property file to the configuration in one transaction (see the module docstring)."""
    entries = parse_properties(text)
    store = admin.store
    node_id = admin.services.settings.node_id
    current = store.all_worker_properties()
    names = {p.get("NAME", "").lower(): wid for wid, p in current.items() if p.get("NAME")}
    next_id = store.next_worker_id()
    result = PropertyFileResult()
    genids: dict[str, int] = {}

    # First pass: assign ids, so GENID<n> in any value resolves whatever the line order.
    targets: list[tuple[Entry, bool, str, int | None, str]] = []  # entry, remove, kind, worker id, prop/key
    wid: int | None
    for entry in entries:
        key = entry.key.strip()
        remove = key.startswith("-")
        if remove:
            key = key[1:].strip()
        if not key:
            raise BadRequestError(f"line {entry.line}: empty property key")
        check_identifier(key, f"line {entry.line}: the property key")
        upper = key.upper()
        if upper.startswith("GLOB.") or upper.startswith("NODE."):
            prop = upper.split(".", 1)[1]
            if not prop:
                raise BadRequestError(f"line {entry.line}: '{key}' names no property")
            full = f"GLOB.{prop}" if upper.startswith("GLOB.") else f"NODE.{node_id.upper()}.{prop}"
            targets.append((entry, remove, "global", None, full))
            continue
        m = _WORKER_KEY.match(key)
        if m:
            prefix, prop = m.group(1).upper(), m.group(3).strip().upper()
            if len(m.group(2)) > len(str(MAX_WORKER_ID)) or int(m.group(2)) > MAX_WORKER_ID:
                raise BadRequestError(f"line {entry.line}: the number in '{shorten(key)}' is over {MAX_WORKER_ID}")
            number = int(m.group(2))
            if prefix == "WORKERGENID":
                label = f"WORKERGENID{number}"
                if label not in genids:
                    genids[label] = next_id
                    result.created[label] = next_id
                    next_id += 1
                wid = genids[label]
            else:
                if number <= 0:
                    raise BadRequestError(f"line {entry.line}: worker id must be positive in '{key}'")
                wid = number
                next_id = max(next_id, wid + 1)
            targets.append((entry, remove, "worker", wid, prop))
            continue
        m = _NAME_KEY.match(key)
        if m:
            name, prop = m.group(1).strip(), m.group(2).strip().upper()
            wid = names.get(name.lower())
            if wid is None:
                wid = next_id
                next_id += 1
                names[name.lower()] = wid
                result.created[f"NAME{name}"] = wid
                targets.append((Entry(entry.line, f"NAME{name}.NAME", name), False, "worker", wid, "NAME"))
            targets.append((entry, remove, "worker", wid, prop))
            continue
        raise BadRequestError(
            f"line {entry.line}: '{entry.key}' has no known prefix; use WORKERGENID<n>., WORKER<id>., "
            "ID<id>., NAME<name>., GLOB. or NODE. (a leading - removes the property)")

    gen_numbers = {int(label[len("WORKERGENID"):]): wid for label, wid in genids.items()}

    def substitute(value: str) -> str:
        return _GENID.sub(lambda m: str(gen_numbers.get(int(m.group(1)), m.group(0)))
                          if int(m.group(1)) in gen_numbers else m.group(0), value)

    # Second pass: the final state of each touched worker and of the global properties.
    worker_sets: dict[int, dict[str, str]] = {}
    worker_removes: dict[int, list[str]] = {}
    global_sets: dict[str, str] = {}
    global_removes: list[str] = []
    for entry, remove, kind, wid, prop in targets:
        if kind == "global":
            if remove:
                global_sets.pop(prop, None)
                if prop not in global_removes:
                    global_removes.append(prop)
                result.messages.append(f"Removing the global property {prop}")
            else:
                value = substitute(entry.value)
                global_sets[prop] = value
                if prop in global_removes:
                    global_removes.remove(prop)
                shown = "********" if is_secret_key(prop) else value
                result.messages.append(f"Setting the global property {prop} to {shown}")
            continue
        assert wid is not None
        sets = worker_sets.setdefault(wid, {})
        removes = worker_removes.setdefault(wid, [])
        if remove:
            sets.pop(prop, None)
            if prop not in removes:
                removes.append(prop)
            result.messages.append(f"Removing the property {prop} from worker {wid}")
        else:
            value = substitute(entry.value)
            if prop == "NAME":
                if not value.strip() or value.strip().isdigit() or not_text(value) is not None:
                    raise BadRequestError(f"line {entry.line}: NAME must be a non-numeric name without control "
                                          f"characters, got {value!r}")
            sets[prop] = value
            if prop in removes:
                removes.remove(prop)
            shown = "********" if is_secret_key(prop) else value
            result.messages.append(f"Setting the property {prop} to {shown} for worker {wid}")

    # Names must stay unique (SignServer would create a second worker with the same name).
    final_names: dict[int, str] = {wid: p["NAME"] for wid, p in current.items() if "NAME" in p}
    for wid in set(worker_sets) | set(worker_removes):
        if "NAME" in worker_removes.get(wid, []):
            final_names.pop(wid, None)
        if "NAME" in worker_sets.get(wid, {}):
            final_names[wid] = worker_sets[wid]["NAME"]
    seen: dict[str, int] = {}
    for wid, name in sorted(final_names.items()):
        other = seen.get(name.lower())
        if other is not None:
            new, old = (wid, other) if wid not in current else (other, wid)
            raise ConflictError(
                f"two workers would be named '{name}' (ids {other} and {wid}); nothing was changed. "
                f"To update the existing worker use WORKER{old}. or NAME{name}. instead of a new worker id")
        seen[name.lower()] = wid
    for wid in set(worker_sets) | set(worker_removes):
        final = {**current.get(wid, {}), **worker_sets.get(wid, {})}
        for k in worker_removes.get(wid, []):
            final.pop(k, None)
        if wid not in current and final and "NAME" not in final:
            raise BadRequestError(f"worker {wid} would be created without a NAME; add WORKER{wid}.NAME=<name> "
                                  "(or the matching WORKERGENID<n>.NAME)")

    audit: list[AuditEvent] = []
    workers: dict[int, tuple[dict[str, str], list[str]]] = {}
    for wid in sorted(set(worker_sets) | set(worker_removes)):
        sets, removes = worker_sets.get(wid, {}), worker_removes.get(wid, [])
        workers[wid] = (sets, removes)
        details = config_diff(current.get(wid, {}), sets, removes)
        if details:
            audit.append(AuditEvent("SET_WORKER_CONFIG", WORKER_CONFIG, admin.admin, wid, details))
            result.workers_changed.append(wid)
    old_globals = store.global_properties()
    for key, value in global_sets.items():
        audit.append(AuditEvent("SET_GLOBAL_PROPERTY", GLOBAL_CONFIG, admin.admin, None, {
            "GLOBALCONFIG_PROPERTY": key, "GLOBALCONFIG_VALUE": "********" if is_secret_key(key) else value}))
        result.globals_changed.append(key)
    for key in global_removes:
        if key in old_globals:
            audit.append(AuditEvent("REMOVE_GLOBAL_PROPERTY", GLOBAL_CONFIG, admin.admin, None,
                                    {"GLOBALCONFIG_PROPERTY": key}))
            result.globals_changed.append(key)
    # Staged like setproperty: active after signpeer reload.
    stage(store, Change(workers, global_sets, list(global_removes), audit))
    return result


def apply_property_file(admin: WorkerAdmin, path: str | Path) -> PropertyFileResult:
    return apply_property_text(admin, read_property_file(path))


# -- dumping --------------------------------------------------------------------------------
def _escape(text: str, is_key: bool) -> str:
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\f":
            out.append("\\f")
        elif ch in "#!" and (is_key or i == 0 or text[i - 1] in " \t" or ch == "#") or ch in "=:" and is_key:
            out.append("\\" + ch)
        elif ch == " " and (is_key or i == 0):
            out.append("\\ ")
        elif ord(ch) > 126 or ord(ch) < 32:
            units = ch.encode("utf-16-be")  # characters beyond the BMP become a surrogate pair
            out.extend(f"\\u{units[j] << 8 | units[j + 1]:04x}" for j in range(0, len(units), 2))
        else:
            out.append(ch)
    return "".join(out)


def _line(key: str, value: str) -> str:
    return f"{_escape(key, True)}={_escape(value, False)}"


def dump_properties(admin: WorkerAdmin, which: str = "all") -> str:
    """A property file with the configuration of ``all`` (workers and global properties) or one worker."""
    store = admin.store
    node_prefix = f"NODE.{admin.services.settings.node_id.upper()}."
    lines = ["# signpeer configuration dump; load it with: signpeer setproperties <file>"]
    if which.strip().lower() == "all":
        globals_ = store.global_properties()
        if globals_:
            lines.append("")
            lines.append("# global properties")
        for key in sorted(globals_):
            if key.startswith("GLOB."):
                lines.append(_line(key, globals_[key]))
            elif key.startswith(node_prefix):
                lines.append(_line("NODE." + key[len(node_prefix):], globals_[key]))
            else:
                # Another node's property: NODE.<x> would load as this node's, so keep it as a note.
                lines.append(f"# other node: {_line(key, globals_[key])}")
        ids = store.worker_ids()
    else:
        ids = [admin.worker_id(which)]
    for wid in ids:
        props = store.worker_properties(wid)
        lines.append("")
        lines.append(f"# worker {wid}" + (f": {props['NAME']}" if "NAME" in props else ""))
        for key in sorted(props, key=lambda k: (k != "NAME", k)):
            lines.append(_line(f"WORKER{wid}.{key}", props[key]))
    return "\n".join(lines) + "\n"
