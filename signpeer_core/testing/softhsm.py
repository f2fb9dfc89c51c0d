"""One SoftHSM2 configuration per test process (PKCS#11 token tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: Tokens of the shared test configuration: (label, user PIN, SO PIN).
SOFTHSM_TOKENS = (("signpeer", "1234", "5678"), ("onetime", "1234", "5678"))
_softhsm_conf: Path | None = None


def session_softhsm() -> Path | None:
    """One SoftHSM2 configuration for a whole test process, with every test token initialized.

    SoftHSM2 reads ``SOFTHSM2_CONF`` and finds its tokens once, when the module is first
    initialized in a process; so all in-process tests must share one configuration created
    before anything loads the module. Called from the repository's root ``conftest.py``.
    Returns the configuration file, or None when SoftHSM2 is not installed.
    """
    global _softhsm_conf
    import shutil
    import tempfile

    if _softhsm_conf is not None:
        return _softhsm_conf
    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        return None
    root = Path(tempfile.mkdtemp(prefix="signpeer-softhsm-"))
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label, pin, so_pin in SOFTHSM_TOKENS:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
                       check=True, capture_output=True, env={**os.environ})
    _softhsm_conf = conf
    return conf
