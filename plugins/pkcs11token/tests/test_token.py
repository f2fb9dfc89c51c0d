"""Pkcs11CryptoToken against a real SoftHSM2 token: key life cycle, certificates, activation
failures, lost sessions, and no session leak. ``pkcs11-tool`` checks the token independently."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from signpeer_core import keys
from signpeer_core.api import KeyHandle
from signpeer_core.errors import (
    ConfigurationError,
    ConflictError,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
)
from signpeer_pkcs11token import module as p11mod
from signpeer_pkcs11token.attributes import parse_attributes


def labels(listing: str) -> set[str]:
    return set(re.findall(r"label:\s+(\S+)", listing))


def private_key_block(listing: str, label: str) -> str:
    """The lines pkcs11-tool prints for the private key object labelled ``label``."""
    blocks = re.split(r"\n(?=\S)", listing)
    found = [b for b in blocks if b.startswith("Private Key Object") and re.search(rf"label:\s+{label}\n", b + "\n")]
    assert len(found) == 1, listing
    return found[0]


def sign_and_verify(token, alias: str, data: bytes = b"hello") -> None:
    key = token.private_key(alias)
    alg = keys.signature_algorithm(keys.default_signature_algorithm(key))
    keys.verify(key.public_key(), alg, keys.sign(key, alg, data), data)


def test_entry_point_registers_the_token_under_signservers_names():
    from importlib import metadata

    from signpeer_core.plugins import Registry, get_plugin_manager

    eps = [ep for ep in metadata.entry_points(group="signpeer") if ep.name == "pkcs11token"]
    assert eps and eps[0].value == "signpeer_pkcs11token.plugin"
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(eps[0].load(), name="pkcs11token")
    registry = Registry(pm)
    for name in ("Pkcs11CryptoToken", "PKCS11CryptoToken", "org.signserver.server.cryptotokens.PKCS11CryptoToken"):
        assert registry.token_types.get(name, "CRYPTOTOKEN_IMPLEMENTATION_CLASS").__name__ == "Pkcs11CryptoToken"


@pytest.mark.parametrize(("keyalg", "keyspec", "desc"), [("ECDSA", "secp256r1", "EC secp256r1"),
                                                         ("RSA", "2048", "RSA 2048"), ("Ed25519", "", "Ed25519")])
def test_generate_list_remove_seen_by_pkcs11_tool(hsm, token, alias, keyalg, keyspec, desc):
    token.generate_key(alias, keyalg, keyspec)
    assert alias in token.key_aliases()
    assert keys.describe_key(token.public_key(alias)) == desc
    listing = hsm.list_objects()
    assert alias in labels(listing)
    assert len(re.findall(rf"label:\s+{alias}\n", listing)) == 2  # private + public object
    sign_and_verify(token, alias)
    assert token.certificate_chain(alias) == []  # no placeholder object in the token
    token.remove_key(alias)
    assert alias not in token.key_aliases()
    assert alias not in labels(hsm.list_objects())
    with pytest.raises(KeyNotFoundError, match="generatekey"):
        token.private_key(alias)


def test_keys_survive_a_new_token_instance(hsm, make_token, token, alias):
    token.generate_key(alias, "EC", "secp384r1")
    other = make_token(hsm.props(), worker_id=2)
    other.auto_activate()
    try:
        assert keys.public_key_der(other.public_key(alias)) == keys.public_key_der(token.public_key(alias))
        sign_and_verify(other, alias)
    finally:
        other.close()
        token.remove_key(alias)


def test_duplicate_alias_and_missing_key(token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    with pytest.raises(ConflictError, match="already has a key"):
        token.generate_key(alias, "RSA", "2048")
    token.remove_key(alias)
    with pytest.raises(KeyNotFoundError):
        token.remove_key(alias)


def test_keygen_attributes_reach_the_token(hsm, make_token, alias):
    plain = make_token(hsm.props())
    plain.auto_activate()
    extractable = make_token(hsm.props(KEYGENERATIONATTRIBUTES="PRIVATE.CKA_EXTRACTABLE=true; PUBLIC.CKA_VERIFY=true"))
    extractable.auto_activate()
    try:
        plain.generate_key(alias + "a", "EC", "secp256r1")
        extractable.generate_key(alias + "b", "EC", "secp256r1")
        listing = hsm.list_objects()
        private_a, private_b = (private_key_block(listing, alias + suffix) for suffix in "ab")
        assert "never extractable" in private_a
        assert "never extractable" not in private_b
    finally:
        plain.remove_key(alias + "a")
        extractable.remove_key(alias + "b")
        plain.close()
        extractable.close()


def test_attribute_parsing():
    attrs = parse_attributes(
        r"attributes(generate, CKO_PUBLIC_KEY, *) = {\n CKA_TOKEN = false\n CKA_VERIFY = true\n}\n"
        r"attributes(generate, CKO_PRIVATE_KEY, CKK_EC) = {\n CKA_SENSITIVE = true\n CKA_EXTRACTABLE = false\n}",
        "CKA_ALWAYS_AUTHENTICATE=false; PUBLIC.CKA_LABEL=ignored")
    from pkcs11 import Attribute

    pub, priv = attrs.templates("EC")
    assert pub == {Attribute.VERIFY: True}  # CKA_TOKEN/CKA_LABEL are the token's own business
    assert priv == {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.ALWAYS_AUTHENTICATE: False}
    assert attrs.templates("RSA")[1] == {Attribute.ALWAYS_AUTHENTICATE: False}
    with pytest.raises(ConfigurationError, match="unknown PKCS#11 attribute"):
        parse_attributes("", "CKA_NOPE=1")
    with pytest.raises(ConfigurationError, match="NAME=VALUE"):
        parse_attributes("", "CKA_SIGN")


def _issue(ca_key, ca_name, public, cn, ca=False):
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={cn}")).issuer_name(ca_name)
         .public_key(public).serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=30)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(ca_key, hashes.SHA256())


def test_import_certificate_chain_is_stored_in_the_token(hsm, token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name.from_rfc4514_string("CN=Root")
    root = _issue(root_key, root_name, root_key.public_key(), "Root", ca=True)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = _issue(root_key, root_name, sub_key.public_key(), "Sub", ca=True)
    leaf = _issue(sub_key, sub.subject, token.public_key(alias), "Leaf")
    with pytest.raises(ConflictError, match="not for key"):
        token.import_certificate_chain(alias, [sub, root])
    token.import_certificate_chain(alias, [leaf, sub, root])
    assert token.certificate_chain(alias) == [leaf, sub, root]
    assert len(re.findall(rf"Certificate Object.*\n(?:.*\n)*?\s+label:\s+{alias}\n", hsm.list_objects())) == 3
    token.import_certificate_chain(alias, [leaf])  # replaces, does not add
    assert token.certificate_chain(alias) == [leaf]
    infos = {i.alias: i for i in token.key_infos()}
    assert infos[alias].certificate == leaf
    token.remove_key(alias)
    assert alias not in labels(hsm.list_objects())  # keys and certificates gone


def test_wrong_pin_leaves_the_token_offline_and_others_working(hsm, make_token, token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    bad = make_token(hsm.props(PIN="0000"), worker_id=7, name="BadPin")
    # The process is already logged in to this token (login state is per process): the
    # wrong PIN must still be refused, and the working token must stay logged in.
    with pytest.raises(CryptoTokenAuthenticationError, match="wrong PIN"):
        bad.auto_activate()
    assert not bad.is_active
    assert "CKR_PIN_INCORRECT" in bad.offline_reasons()[0] and "activatecryptotoken BadPin" in bad.offline_reasons()[0]
    sign_and_verify(token, alias)
    bad.activate(hsm.pin)  # activation at run time with the right PIN
    sign_and_verify(bad, alias)
    bad.deactivate()
    assert not bad.is_active and "not activated" in bad.offline_reasons()[0]
    sign_and_verify(token, alias)  # closing another instance's session keeps this login
    bad.close()
    token.remove_key(alias)


def test_wrong_pin_when_nobody_is_logged_in(hsm, make_token):
    bad = make_token(hsm.props(PIN="0000"))
    before = p11mod.load_module(hsm.module).open_sessions.copy()
    with pytest.raises(CryptoTokenAuthenticationError):
        bad.auto_activate()
    assert p11mod.load_module(hsm.module).open_sessions == before


@pytest.mark.parametrize(("props", "reason"), [
    ({"SHAREDLIBRARY": "/nonexistent/libpkcs11.so"}, "/nonexistent/libpkcs11.so does not exist"),
    ({"SLOTLABELVALUE": "NoSuchToken"}, "no token labelled 'NoSuchToken'"),
    ({"SLOTLABELTYPE": "SLOT_NUMBER", "SLOTLABELVALUE": "424242"}, "no slot 424242"),
    ({"SLOTLABELTYPE": "SLOT_INDEX", "SLOTLABELVALUE": "99"}, "no slot index 99"),
])
def test_unreachable_token_reports_what_to_fix(hsm, make_token, props, reason):
    token = make_token(hsm.props(**props))
    with pytest.raises(CryptoTokenOfflineError):
        token.auto_activate()
    assert not token.is_active
    assert reason in token.offline_reasons()[0]
    with pytest.raises(CryptoTokenOfflineError, match="not activated"):
        token.key_aliases()


def test_bad_configuration_is_a_configuration_error(hsm, make_token):
    with pytest.raises(ConfigurationError, match="SHAREDLIBRARY"):
        make_token({"SLOTLABELVALUE": "x"})
    with pytest.raises(ConfigurationError, match="SLOTLABELTYPE"):
        make_token(hsm.props(SLOTLABELTYPE="SERIAL"))
    with pytest.raises(ConfigurationError, match="whole number"):
        make_token(hsm.props(SLOTLABELTYPE="SLOT_NUMBER", SLOTLABELVALUE="abc"))


def test_slot_number_and_index_and_legacy_properties(hsm, make_token, token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    module = p11mod.load_module(hsm.module)
    slots = module.lib.get_slots()
    index = next(i for i, s in enumerate(slots) if s.get_token().label == hsm.label)
    for extra in ({"SLOTLABELTYPE": "SLOT_NUMBER", "SLOTLABELVALUE": str(slots[index].slot_id)},
                  {"SLOTLABELTYPE": "SLOT_INDEX", "SLOTLABELVALUE": str(index)},
                  {"SLOTLABELTYPE": "", "SLOTLABELVALUE": "", "SLOT": str(slots[index].slot_id)}):
        other = make_token(hsm.props(**extra))
        other.auto_activate()
        sign_and_verify(other, alias)
        other.close()
    token.remove_key(alias)


def test_lost_session_and_lost_login_are_recovered(hsm, token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    module = p11mod.load_module(hsm.module)
    sign_and_verify(token, alias)
    with module.lock:  # the session disappears behind the token's back
        module.raw.close_session(token._session.handle)
    sign_and_verify(token, alias)
    with module.lock:  # the login disappears (CKR_USER_NOT_LOGGED_IN on the next use)
        module.raw.logout(token._session.handle)
    sign_and_verify(token, alias)
    assert token.offline_reasons() == []
    with module.lock:
        closed = token._session
        module.raw.close_session(closed.handle)
    token._next_probe = 0
    # The status read answers from what the token knows, without calling into the module; the
    # probe it starts runs in a thread, notices the closed session and reopens one.
    with module.lock:  # while the module is busy, the status read still answers at once
        assert token.offline_reasons() == []
    deadline = time.monotonic() + 30
    while (token._checking or token._session is closed) and time.monotonic() < deadline:
        token.offline_reasons()  # starts the next probe when one is due
        time.sleep(0.01)
    assert token._session is not closed and token.offline_reasons() == []
    sign_and_verify(token, alias)
    token.remove_key(alias)


def test_stale_cached_handle_after_removal_elsewhere(hsm, make_token, token, alias):
    token.generate_key(alias, "EC", "secp256r1")
    key = token.private_key(alias)
    other = make_token(hsm.props(), worker_id=3)
    other.auto_activate()
    other.remove_key(alias)
    other.close()
    with pytest.raises(KeyNotFoundError):
        key.sign(b"x", ec.ECDSA(hashes.SHA256()))


def test_without_key_cache(hsm, make_token, alias):
    token = make_token(hsm.props(CACHE_PRIVATEKEY="false"))
    token.auto_activate()
    token.generate_key(alias, "RSA", "2048")
    assert token._objects == {} and token._wrappers == {}
    sign_and_verify(token, alias)
    token.remove_key(alias)
    token.close()


def _max_handle(module, token) -> int:
    # Handles grow monotonically in SoftHSM2: a fresh session's handle bounds all earlier ones.
    with module.lock:
        probe = token._session.token.open()
        handle = probe.handle
        probe.close()
    return handle


def test_no_session_leak_after_10000_signatures(hsm, make_token, alias):
    module = p11mod.load_module(hsm.module)
    token = make_token(hsm.props())
    token.auto_activate()
    token.generate_key(alias, "EC", "secp256r1")
    before = p11mod.count_open_sessions(module, _max_handle(module, token))
    key = token.private_key(alias)
    digest_alg = ec.ECDSA(hashes.SHA256())
    for i in range(10_000):
        key.sign(b"%d" % i, digest_alg)
    for _ in range(20):  # forced reconnects must not leak either
        with module.lock:
            module.raw.close_session(token._session.handle)
        key.sign(b"again", digest_alg)
    after = p11mod.count_open_sessions(module, _max_handle(module, token))
    assert after == before
    token.remove_key(alias)
    token.close()
    assert p11mod.count_open_sessions(module, _max_handle(module, token) if token._session else 10_000) == before - 1


def test_prehashed_digest_length_checked(token, alias):
    from cryptography.hazmat.primitives.asymmetric import utils

    token.generate_key(alias, "EC", "secp256r1")
    key = token.private_key(alias)
    with pytest.raises(ValueError, match="32 bytes"):
        key.sign(b"short", ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    sig = key.sign(hashlib.sha256(b"m").digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    key.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))
    token.remove_key(alias)


def test_token_that_appears_later_comes_online(tmp_path: Path) -> None:
    """An HSM missing at start (or failing passingly) leaves the worker OFFLINE with the reason,
    and the configured PIN is tried again: once the token is there, the worker comes online
    without a reload or an administrator."""
    import json
    import sys

    child = Path(__file__).with_name("late_child.py")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    out = subprocess.run([sys.executable, str(child), str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["start_error"] == "CryptoTokenOfflineError" and result["active_at_start"] is False
    assert "cannot be loaded" in " ".join(result["reasons_at_start"])
    assert result["active_later"] is True and result["reasons_later"] == [] and result["keys"] == ["k"]
    # A wrong PIN is tried once the token is there, then never again (HSMs lock PINs).
    assert result["wrong_pin_retry_stopped"] is True
    assert "PIN" in " ".join(result["wrong_pin_reasons"])


# -- one-time keys: generate_session_key / destroy_session_key ---------------------------------------
def _sign_with(key, data: bytes = b"one-time") -> None:
    alg = keys.signature_algorithm(keys.default_signature_algorithm(key))
    keys.verify(key.public_key(), alg, keys.sign(key, alg, data), data)


@pytest.mark.parametrize(("keyalg", "keyspec", "desc"), [("ECDSA", "secp256r1", "EC secp256r1"),
                                                         ("RSA", "2048", "RSA 2048"), ("Ed25519", "", "Ed25519")])
def test_session_key_signs_and_leaves_nothing_in_the_token(hsm, token, alias, keyalg, keyspec, desc):
    key = token.generate_session_key(alias, keyalg, keyspec)
    assert keys.describe_key(key.public_key()) == desc
    _sign_with(key)
    assert alias not in labels(hsm.list_objects())  # a session object: never in the token's storage
    token.destroy_session_key(alias)
    with pytest.raises(KeyNotFoundError):
        _sign_with(key)
    token.destroy_session_key(alias)  # a second delete is no error
    assert token._session_keys == {} and alias not in token._objects


def test_session_key_as_token_object_is_deleted_after_a_reopened_session(hsm, token, alias):
    key = token.generate_session_key(alias, "EC", "secp256r1", token_object=True)
    _sign_with(key)
    assert len(re.findall(rf"label:\s+{alias}\n", hsm.list_objects())) == 2  # private + public token objects
    module = p11mod.load_module(hsm.module)
    with module.lock:  # the session disappears behind the token's back: the handles are forgotten
        module.raw.close_session(token._session.handle)
    _sign_with(key)  # found again by its label in a new session
    token.destroy_session_key(alias)  # no handles: deleted by label
    assert alias not in labels(hsm.list_objects())


def test_session_keys_die_with_their_session(hsm, token, alias):
    key = token.generate_session_key(alias, "EC", "secp256r1")
    module = p11mod.load_module(hsm.module)
    with module.lock:
        module.raw.close_session(token._session.handle)
    with pytest.raises(KeyNotFoundError):
        _sign_with(key)
    token.destroy_session_key(alias)  # nothing left to delete, and no error
    assert alias not in token.key_aliases()


def test_session_keys_of_one_spec_share_one_signature_timing(hsm, token, alias):
    """A one-time key's first signature (its certificate request's, made in a thread) no longer
    decides alone whether its signatures may run inline: the session keys of one spec share one
    timing, so a fresh key of a spec known to sign fast signs inline at once (no thread trip)."""
    first = token.generate_session_key(alias, "EC", "secp256r1")
    _sign_with(first)
    second = token.generate_session_key(f"{alias}-2", "EC", "secp256r1")
    other = token.generate_session_key(f"{alias}-3", "EC", "secp384r1")
    try:
        assert second.timing is first.timing and second.timing.estimate is not None
        assert other.timing is not first.timing and other.timing.estimate is None  # another spec: its own
        # Known fast (a loaded machine may time one signature over the limit; the window's fastest decides).
        first.timing.estimate = 0.0
        handle = KeyHandle(alias=second.alias, private_key=second)
        assert asyncio.run(token.run_blocking(lambda h: threading.get_ident(), handle)) == threading.get_ident()
        slow = KeyHandle(alias=other.alias, private_key=other)  # not timed yet: a worker thread
        assert asyncio.run(token.run_blocking(lambda h: threading.get_ident(), slow)) != threading.get_ident()
    finally:
        for key in (first, second, other):
            token.destroy_session_key(key.alias)


class _FailingKey:
    """A private key object that fails ``times`` signatures with a device error, then signs."""

    def __init__(self, real: object, error: type[Exception], times: int) -> None:
        self.real, self.error, self.left = real, error, times

    def sign(self, *args: object, **kwargs: object) -> bytes:
        if self.left:
            self.left -= 1
            raise self.error()
        return self.real.sign(*args, **kwargs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("error_name", ["GeneralError", "FunctionFailed"])
def test_a_device_failure_while_signing_is_retried_once_then_a_503(token, alias, error_name):
    """SoftHSM2's file store fails a signature now and then while another process rewrites the
    token (seen under load): one retry with a fresh handle, and a second failure is a 503 that
    names the token, never a bare PKCS#11 exception (a 500 with a traceback)."""
    from pkcs11 import exceptions as p11e

    from signpeer_core.api import CryptoTokenOfflineError

    error = getattr(p11e, error_name)
    token.generate_key(alias, "EC", "secp256r1")
    key = token.private_key(alias)
    key.sign(b"warm", ec.ECDSA(hashes.SHA256()))  # the handle is cached now: the fast path runs first
    real = token._objects[alias]
    token._objects[alias] = _FailingKey(real, error, times=1)  # fails on the fast path, then signs
    signature = key.sign(b"doc", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"doc", ec.ECDSA(hashes.SHA256()))

    # Failing every time: the lookup after the first failure finds this failing object again.
    failing = _FailingKey(real, error, times=10)
    token._objects[alias] = failing
    original = token._private_object
    token._private_object = lambda session, a: failing if a == alias else original(session, a)
    try:
        with pytest.raises(CryptoTokenOfflineError, match=f"failed while signing \\({error_name}\\)") as caught:
            key.sign(b"doc", ec.ECDSA(hashes.SHA256()))
    finally:
        del token._private_object
    assert caught.value.status == 503
