"""Test-session set-up shared by core and plugin tests."""

from __future__ import annotations


def pytest_configure(config: object) -> None:
    # Before any test can load the PKCS#11 module in this process: see session_softhsm().
    from signpeer_core.testing import session_softhsm

    session_softhsm()
