"""Test-session set-up of this repository (the fixtures are the pytest plugin
``signpeer_core.testing.fixtures``, which pytest loads from signpeer-core's entry point)."""

from __future__ import annotations


def pytest_configure(config: object) -> None:
    # Before any test can load the PKCS#11 module in this process: see session_softhsm().
    from signpeer_core.testing import session_softhsm

    session_softhsm()
