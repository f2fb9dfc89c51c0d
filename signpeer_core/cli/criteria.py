"""SignServer's ``-criteria "<field> <op> <value>"`` option (``auditlog -query``,
``querytokenentries``): parsing, and matching in memory for sources that are not SQL tables."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

#: SignServer's relational operators (CESeCore's RelationalOperator).
OPERATORS = ("EQ", "NEQ", "GT", "GE", "LT", "LE", "LIKE", "NULL", "NOTNULL")
#: Operators that take no value.
NO_VALUE = ("NULL", "NOTNULL")


@dataclass(frozen=True)
class Criterion:
    """One ``<field> <op> [<value>]`` term; the terms of a query are ANDed."""

    field: str
    op: str
    value: str | None

    def matches(self, actual: str | None) -> bool:
        """In-memory test of ``actual`` (SQL semantics: NULL matches only NULL/NOTNULL)."""
        if self.op == "NULL":
            return actual is None
        if self.op == "NOTNULL":
            return actual is not None
        if actual is None or self.value is None:
            return False
        if self.op == "LIKE":
            return like_pattern(self.value).fullmatch(actual) is not None
        order = {"EQ": actual == self.value, "NEQ": actual != self.value, "GT": actual > self.value,
                 "GE": actual >= self.value, "LT": actual < self.value, "LE": actual <= self.value}
        return order[self.op]


def like_pattern(pattern: str) -> re.Pattern[str]:
    """SQL LIKE (``%`` any run, ``_`` one character) as a regular expression."""
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern), re.S)


def parse_criterion(text: str, fields: tuple[str, ...], operators: tuple[str, ...] = OPERATORS) -> Criterion:
    """``"<field> <op> <value>"`` (the value is the rest of the text, spaces included); a wrong
    field or operator is a usage error (exit 255) naming what is allowed."""
    parts = text.strip().split(" ", 2)
    by_lower = {f.lower(): f for f in fields}
    if len(parts) < 2 or parts[0].lower() not in by_lower:
        raise argparse.ArgumentTypeError(
            f"Invalid criteria specified: '{text}': write \"<field> <op> <value>\" with a field of: {', '.join(fields)}")
    op = parts[1].upper()
    if op not in operators:
        raise argparse.ArgumentTypeError(
            f"Invalid criteria specified: '{text}': the operator must be one of {', '.join(operators)}")
    if op in NO_VALUE:
        if len(parts) > 2:
            raise argparse.ArgumentTypeError(f"Invalid criteria specified: '{text}': {op} takes no value")
        return Criterion(by_lower[parts[0].lower()], op, None)
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(f"Invalid criteria specified: '{text}': {op} needs a value")
    return Criterion(by_lower[parts[0].lower()], op, parts[2])


def criterion_type(fields: tuple[str, ...], operators: tuple[str, ...] = OPERATORS) -> Callable[[str], Criterion]:
    """An argparse ``type=`` for ``-criteria`` over ``fields``."""
    def convert(text: str) -> Criterion:
        return parse_criterion(text, fields, operators)

    convert.__name__ = "criteria"
    return convert


def non_negative(value: str) -> int:
    """``-from``: an index from 0."""
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise argparse.ArgumentTypeError(f"Invalid from index value: {value}")
    return int(value)


def positive(value: str) -> int:
    """``-limit``: at least 1."""
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise argparse.ArgumentTypeError(f"Invalid limit value: {value}")
    if int(value) <= 0:
        raise argparse.ArgumentTypeError(f"Too small value specified for limit: {value}")
    return int(value)
