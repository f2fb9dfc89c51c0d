"""Files the administration commands read and write (certificates, CSRs, property files)."""

from __future__ import annotations

import os
from pathlib import Path

from signpeer_core.errors import BadRequestError


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadRequestError(f"no such {what}: {path}") from None
    except OSError as exc:
        raise BadRequestError(f"cannot read {what} {path}: {exc.strerror}") from None


def write_file(path: str, data: bytes, private: bool = False) -> None:
    p = Path(path)
    try:
        if private:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            p.write_bytes(data)
    except OSError as exc:
        raise BadRequestError(f"cannot write {path}: {exc.strerror}") from None
