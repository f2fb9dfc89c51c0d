"""``formupload.decode_base64`` decodes with pybase64 (SIMD) first: it must accept and refuse
exactly what the binascii reading it replaced on the hot path accepts and refuses, with the same
bytes, for every input (the strict reading, then the one that skips whitespace)."""

from __future__ import annotations

import base64
import binascii
import random

import pytest

from signpeer_core.errors import BadRequestError
from signpeer_core.formupload import decode_base64


def binascii_reading(text: str | bytes) -> bytes | None:
    """The reading before pybase64 (None: the 400)."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:
        compact = b"".join(text.split()) if isinstance(text, bytes) else "".join(text.split())
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def reading(text: str | bytes) -> bytes | None:
    try:
        return decode_base64(text)
    except BadRequestError as exc:
        assert exc.status == 400 and "is not valid base64" in exc.message
        return None


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
ODD = "= \n\t\r-_.*é\x00\u2028"
EDGES = ["", "=", "==", "===", "====", "A", "AA", "AAA", "AAAA", "AA==", "AAA=", "A===", "AA=A", "=AAA",
         "AA==AA==", "AAAA====", "AB==", "AAB=", "QQ", "QQ=", "QQ==", "QQ===", "QUJD", "QUJD\n", " QUJD",
         "QU JD", "QUJD=", "QUJD==", "Q===", "QQ=\n=", "-_-_", "QUJé", "QUJD\r\nQUJD", "QUJD\x00"]


def mutated(rng: random.Random, size: int) -> str:
    """Base64 of ``size`` random bytes with up to three characters inserted, removed or replaced
    (near the start, near the end where the padding is, or anywhere)."""
    chars = list(base64.b64encode(rng.randbytes(size)).decode())
    for _ in range(rng.randint(0, 3)):
        pos = max(0, min(len(chars), rng.choice([rng.randint(0, len(chars)), len(chars) - rng.randint(0, 4),
                                                 rng.randint(0, 8)])))
        op = rng.random()
        if op < 0.4:
            chars.insert(pos, rng.choice(ODD + ALPHABET))
        elif chars and op < 0.7:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(ODD + ALPHABET)
    return "".join(chars)


@pytest.mark.parametrize("sizes", [(0, 12), (12, 100), (700, 1600)], ids=["short", "medium", "1KiB"])
def test_the_same_reading_as_binascii(sizes: tuple[int, int]) -> None:
    rng = random.Random(sizes[1])
    texts = EDGES + [mutated(rng, rng.randint(*sizes)) for _ in range(3000)]
    refused = accepted = 0
    for text in texts:
        for form in (text, text.encode("utf-8")):
            expected = binascii_reading(form)
            assert reading(form) == expected, repr(form)
            if expected is None:
                refused += 1
            else:
                accepted += 1
    assert refused > 500 and accepted > 500  # both sides of the reading were compared
