"""Child process for test_token_that_appears_later_comes_online: an HSM that is not there when
the worker starts (no SoftHSM2 configuration yet) and appears a moment later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

root = Path(sys.argv[1])
conf = root / "softhsm2.conf"
os.environ["SOFTHSM2_CONF"] = str(conf)  # does not exist yet: the module cannot initialize

from signpeer_core.config import WorkerConfig  # noqa: E402
from signpeer_pkcs11token.token import Pkcs11CryptoToken  # noqa: E402


def make(worker_id: int, pin: str) -> Pkcs11CryptoToken:
    return Pkcs11CryptoToken(worker_id, WorkerConfig(worker_id, {
        "NAME": f"HSM{worker_id}", "SHAREDLIBRARY": "/usr/lib/softhsm/libsofthsm2.so", "SLOTLABELTYPE": "TOKEN_LABEL",
        "SLOTLABELVALUE": "late", "PIN": pin}), None)  # type: ignore[arg-type]


token, wrong = make(1, "1234"), make(2, "9999")
result: dict[str, object] = {}
for t in (token, wrong):
    try:
        t.auto_activate()
    except Exception as exc:  # expected: the HSM is not there yet
        result["start_error"] = type(exc).__name__
result["active_at_start"] = token.is_active
result["reasons_at_start"] = token.offline_reasons()
(root / "tokens").mkdir()
conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "late", "--pin", "1234", "--so-pin", "5678"],
               check=True, capture_output=True)
started = time.monotonic()  # the loops wait on the token; 120 s is only a safety net
while not token.is_active and time.monotonic() - started < 120:
    time.sleep(0.1)
result["active_later"] = token.is_active
while wrong._retry_pin is not None and time.monotonic() - started < 120:  # its one retry meets the wrong PIN
    _ = wrong.is_active  # the read starts the retry
    time.sleep(0.1)
result["wrong_pin_retry_stopped"] = wrong._retry_pin is None and not wrong.is_active
result["wrong_pin_reasons"] = wrong.offline_reasons()
result["reasons_later"] = token.offline_reasons()
token.generate_key("k", "ECDSA", "secp256r1")
result["keys"] = token.key_aliases()
print(json.dumps(result))
