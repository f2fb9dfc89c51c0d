"""A real SoftHSM2 token for the tests, created in a temporary folder.

SoftHSM2 reads ``SOFTHSM2_CONF`` and finds its tokens when the module is initialized, once
per process: so the configuration and every token the tests use are created by one
session fixture before anything loads the module, and later tests use fresh key aliases
instead of fresh tokens.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "signpeer"
PIN = "1234"
SO_PIN = "5678"
_counter = itertools.count()


@dataclass
class Hsm:
    """Where the test token is and how to reach it."""

    module: str
    conf: Path
    label: str
    pin: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def list_objects(self) -> str:
        """``pkcs11-tool --list-objects``: an independent view of what is in the token."""
        out = subprocess.run(
            ["pkcs11-tool", "--module", self.module, "--token-label", self.label, "--login", "--pin", self.pin,
             "--list-objects"], env=self.env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def props(self, **extra: str) -> dict[str, str]:
        base = {"SHAREDLIBRARY": self.module, "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": self.label,
                "PIN": self.pin}
        base.update(extra)
        return base


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Hsm:
    missing = [tool for tool in ("softhsm2-util", "pkcs11-tool") if shutil.which(tool) is None]
    if missing or not Path(MODULE).exists():
        pytest.skip(f"SoftHSM2/OpenSC not installed ({', '.join(missing) or MODULE} missing): "
                    "apt-get install -y softhsm2 opensc")
    # The repository's root conftest.py made one configuration for the whole test process (SoftHSM2
    # reads it once per process) with this token in it; when run from elsewhere, make it now.
    from signpeer_core.testing import session_softhsm

    conf = session_softhsm()
    assert conf is not None
    return Hsm(MODULE, conf, LABEL, PIN)


@pytest.fixture
def alias() -> str:
    """A key alias no other test uses (all tests share one token)."""
    return f"key{os.getpid()}x{next(_counter)}"


def _make_token(props: dict[str, str], worker_id: int = 1, name: str = "CryptoTokenP11"):
    from signpeer_core.config import WorkerConfig
    from signpeer_pkcs11token.token import Pkcs11CryptoToken

    return Pkcs11CryptoToken(worker_id, WorkerConfig(worker_id, {"NAME": name, **props}), None)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def make_token():
    """Build a token from properties (not activated); the caller closes it."""
    return _make_token


@pytest.fixture
def token(hsm: Hsm):
    t = _make_token(hsm.props())
    t.auto_activate()
    yield t
    t.close()
