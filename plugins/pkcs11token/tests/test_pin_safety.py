"""A wrong PIN never takes an active token offline, and repeated wrong PINs are slowed down
before a real HSM would lock the user PIN (SoftHSM2 as the HSM)."""

from __future__ import annotations

import pytest

from signpeer_core import keys
from signpeer_core.errors import CryptoTokenAuthenticationError
from signpeer_core.testing import wait_until
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.pinthrottle import PinThrottledError


def sign_and_verify(token, alias: str) -> None:  # type: ignore[no-untyped-def]
    alg = keys.signature_algorithm("SHA256withECDSA")
    keys.verify(token.public_key(alias), alg, keys.sign(token.private_key(alias), alg, b"still signing"),
                b"still signing")


def test_a_wrong_pin_leaves_an_active_token_active(hsm, token, alias) -> None:  # type: ignore[no-untyped-def]
    token.generate_key(alias, "EC", "secp256r1")
    sessions = p11mod.load_module(hsm.module).open_sessions.copy()
    with pytest.raises(CryptoTokenAuthenticationError, match="wrong PIN"):
        token.activate("0000")
    assert token.is_active and token.offline_reasons() == []
    assert p11mod.load_module(hsm.module).open_sessions == sessions  # the checking session is gone
    sign_and_verify(token, alias)  # its workers keep signing
    token.activate(hsm.pin)  # the right PIN again: still active, nothing dropped
    assert token.is_active
    sign_and_verify(token, alias)
    token.remove_key(alias)


def test_repeated_wrong_pins_are_slowed_down_then_the_right_one_resets(hsm, make_token) -> None:  # type: ignore[no-untyped-def]
    bad = make_token(hsm.props(PIN="0000"), worker_id=31, name="Guessing")
    other = make_token(hsm.props(), worker_id=32, name="SameHsmToken")
    try:
        for _ in range(2):  # the first wrong PINs reach the HSM and say so
            with pytest.raises(CryptoTokenAuthenticationError, match="wrong PIN"):
                bad.activate("0000")
        # The next one is refused before it reaches the HSM, for every worker on that HSM token.
        with pytest.raises(PinThrottledError) as throttled:
            bad.activate("0000")
        assert throttled.value.status == 429 and "2 wrong PINs in a row" in throttled.value.message
        with pytest.raises(PinThrottledError):
            other.activate(hsm.pin)
        assert not bad.is_active and not other.is_active

        def right_pin_accepted() -> bool:
            try:
                other.activate(hsm.pin)
            except PinThrottledError:
                return False
            return True

        wait_until(right_pin_accepted, 10, what="the delay after two wrong PINs to pass")
        assert other.is_active
        # A successful login resets the count (as the HSM resets its own): a typo is free again.
        with pytest.raises(CryptoTokenAuthenticationError, match="wrong PIN"):
            bad.activate("0000")
        bad.activate(hsm.pin)
        assert bad.is_active
    finally:
        bad.close()
        other.close()
