"""Identifiers from outside: what makes a worker id, and what text an identifier may hold.

A worker is named by an id or a NAME wherever a request or a command names one (the REST
path, the peer endpoint's binding, the Admin Web, the CLI, property files). Python's
``str.isdigit`` and ``int`` accept much more than an id: superscripts (``²``: ``isdigit`` but
not ``int``), fullwidth and other scripts' digits (``１０`` is ``int`` 10), and numbers of any
length (over 4,300 digits ``int`` raises; over 63 bits the database does). Here only ASCII
digits make an id, at most :data:`MAX_WORKER_ID` (SignServer's ids are Java ints).

Identifiers (NAME, aliases, rule fields) must be printable text: :func:`check_identifier`
refuses control characters (a newline would forge a log line, a NUL truncates in C code) and
lone surrogates (valid JSON, ``\\ud800``, but not text: they cannot be encoded as UTF-8).
"""

from __future__ import annotations

import re
import unicodedata

from signpeer_core.errors import BadRequestError

#: The largest worker id (SignServer's worker ids are Java ints).
MAX_WORKER_ID = 2**31 - 1

#: Ids from here up are the band of ``signpeer init``'s demo workers: a new worker's id (SignServer's
#: highest id + 1) is counted below it, so a fresh data directory still gives SignServer's quick
#: start and sample files the ids 1, 2, ... they expect.
DEMO_ID_BAND = 90000

_ASCII_NUMBER = re.compile(r"[0-9]+", re.ASCII)

#: Unicode categories that are not text in an identifier: controls (Cc: C0, DEL, C1), format
#: characters (Cf: bidirectional overrides, zero-width), lone surrogates (Cs), line and
#: paragraph separators (Zl, Zp).
_NOT_TEXT = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_number(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits (of any length)."""
    return _ASCII_NUMBER.fullmatch(text) is not None


def worker_id_of(text: str | int) -> int | None:
    """The worker id ``text`` spells, or None when it is not one.

    Only ASCII digits, at most :data:`MAX_WORKER_ID`; surrounding blanks are ignored. Anything
    else (``²``, ``１０``, ``-1``, 5,000 digits) is not an id, so a lookup treats it as a name.
    """
    if isinstance(text, int):
        return text if 0 < text <= MAX_WORKER_ID else None
    key = text.strip()
    if not is_number(key) or len(key) > len(str(MAX_WORKER_ID)):
        return None
    value = int(key)
    return value if 0 < value <= MAX_WORKER_ID else None


def not_text(value: str) -> str | None:
    """The first character of ``value`` that is not text in an identifier, as ``U+XXXX``, or None."""
    for ch in value:
        if (ch < " " or ch >= "\x7f") and unicodedata.category(ch) in _NOT_TEXT:
            return f"U+{ord(ch):04X}"
    return None


def check_identifier(value: str, what: str) -> str:
    """``value`` when it holds only text; else :class:`BadRequestError` naming ``what`` and the character."""
    bad = not_text(value)
    if bad is not None:
        raise BadRequestError(f"{what} must not contain control characters, line breaks or lone surrogates "
                              f"(found {bad}); use printable text")
    return value


def check_encodable(value: str, what: str) -> str:
    """``value`` when it can be stored as UTF-8 text on every backend (no lone surrogates, no NUL,
    which PostgreSQL's text cannot hold); else :class:`BadRequestError`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(f"{what} is not valid Unicode text (a lone surrogate at position {exc.start}); "
                              f"send text") from None
    if "\x00" in value:
        raise BadRequestError(f"{what} must not contain the NUL character (at position {value.index(chr(0))}); "
                              "send text")
    return value


def shorten(value: str, limit: int = 64) -> str:
    """``value`` for a message: at most ``limit`` characters, with how much was cut."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"
