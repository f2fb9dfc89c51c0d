"""The PKCS#11 token's metrics: open sessions, reopened sessions and retried operations, as the
token goes through a lost session (SoftHSM2)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from signpeer_core.keys import sign, signature_algorithm
from signpeer_pkcs11token import module as p11mod


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sessions_reconnects_and_retries_are_counted(hsm, token, alias) -> None:
    worker = token.config.name
    token.generate_key(alias, "EC", "secp256r1")
    algorithm = signature_algorithm("SHA256withECDSA")
    sign(token.private_key(alias), algorithm, b"before")
    sessions = sample("signpeer_pkcs11_sessions", worker=worker)
    assert sessions >= 1
    retries = sample("signpeer_pkcs11_retries_total", worker=worker)
    reconnects = sample("signpeer_pkcs11_reconnects_total", worker=worker, outcome="success")

    module = p11mod.load_module(hsm.module)
    with module.lock:  # the session disappears behind the token's back
        module.raw.close_session(token._session.handle)
    sign(token.private_key(alias), algorithm, b"after")  # reopened, and the operation retried once

    assert sample("signpeer_pkcs11_retries_total", worker=worker) == retries + 1
    assert sample("signpeer_pkcs11_reconnects_total", worker=worker, outcome="success") == reconnects + 1
    assert sample("signpeer_pkcs11_sessions", worker=worker) == sessions  # one closed, one opened
    token.remove_key(alias)
    token.close()
    assert sample("signpeer_pkcs11_sessions", worker=worker) == sessions - 1
