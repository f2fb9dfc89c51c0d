"""PlainSigner's prepared signer with keys in SoftHSM2 (:mod:`signpeer_pkcs11token.prepared`).

Signatures made on the hot path are checked by ``openssl``; deactivation, removal (through
signpeer and by another process), a lost session, an expired certificate and request options
are refused or recovered exactly as on the general path, with the same messages; concurrent
requests, with other threads using the module at the same time, all sign correctly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

import signpeer_pkcs11token.plugin
from signpeer_core.api import SignpeerError
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.workers import SignRequest, SignResponse

P11 = "org.signserver.server.cryptotokens.PKCS11CryptoToken"
PLAIN = "org.signserver.module.cmssigner.PlainSigner"
TOKEN_WORKER = "PreparedHSM"
#: signer name -> (KEYALG, KEYSPEC, SIGNATUREALGORITHM or "", openssl digest option)
KEYS = {
    "P256": ("ECDSA", "secp256r1", "", "-sha256"),
    "P384": ("ECDSA", "secp384r1", "SHA384withECDSA", "-sha384"),
    "Ed25519": ("Ed25519", "Ed25519", "", ""),
}


def open_services(home: Path) -> Services:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(signpeer_pkcs11token.plugin, name="pkcs11token")
    return Services.open(load_settings(home), registry=Registry(pm))


def certificate(ca_key, ca_name: x509.Name, public, cn: str, days: int = 10) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={cn}")).issuer_name(ca_name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now + dt.timedelta(days=days))
            .sign(ca_key, hashes.SHA256()))


class Setup:
    """One data directory: a crypto worker on the test token and a PlainSigner per key type, plus
    ``Removable`` and ``RemovedElsewhere`` (P-256 keys the removal test deletes, through signpeer
    and with pkcs11-tool) and ``Expired`` (an expired certificate)."""

    def __init__(self, hsm, home: Path, tmp: Path) -> None:
        self.hsm, self.home, self.tmp = hsm, home, tmp
        self.prefix = f"prep{os.getpid()}"
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name.from_rfc4514_string("CN=Prepared test CA")
        services = open_services(home)
        store = services.store
        store.update_worker(1, {"NAME": TOKEN_WORKER, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                                "CRYPTOTOKEN_IMPLEMENTATION_CLASS": P11, **hsm.props()})
        services.runtime.load()
        token = services.runtime.get(TOKEN_WORKER).crypto_token()
        self.certificates: dict[str, x509.Certificate] = {}
        signers = {name: spec for name, spec in KEYS.items()}
        signers["Removable"] = ("ECDSA", "secp256r1", "", "-sha256")
        signers["RemovedElsewhere"] = ("ECDSA", "secp256r1", "", "-sha256")
        signers["Expired"] = ("ECDSA", "secp256r1", "", "-sha256")
        for wid, (name, (keyalg, keyspec, sigalg, _)) in enumerate(signers.items(), start=2):
            alias = f"{self.prefix}{name}"
            token.generate_key(alias, keyalg, keyspec)
            cert = certificate(self.ca_key, self.ca_name, token.public_key(alias), name, days=-1 if name == "Expired" else 10)
            self.certificates[name] = cert
            props = {"NAME": name, "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": PLAIN, "CRYPTOTOKEN": TOKEN_WORKER,
                     "DEFAULTKEY": alias, "AUTHTYPE": "NOAUTH", "SIGNERCERTCHAIN": encode_certificate_property([cert])}
            if sigalg:
                props["SIGNATUREALGORITHM"] = sigalg
            store.update_worker(wid, props)
        services.close()
        self.services = open_services(home)  # a fresh process view: the token activates from PIN
        self.token = self.services.runtime.get(TOKEN_WORKER).crypto_token()

    def signer(self, name: str):
        return self.services.runtime.get(name)

    def sign(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> bytes:
        request = SignRequest(data=data, request_id="r", metadata=metadata or {})
        return asyncio.run(self.signer(name).process(request)).data

    def openssl_verify(self, name: str, data: bytes, signature: bytes) -> None:
        """``openssl`` checks ``signature`` of ``data`` with the signer certificate's key."""
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        pub, doc, sig = folder / "pub.pem", folder / "data.bin", folder / "sig.bin"
        pub.write_bytes(self.certificates[name].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        doc.write_bytes(data)
        sig.write_bytes(signature)
        digest = KEYS[name][3] if name in KEYS else "-sha256"
        if not digest and not data:  # openssl 3.0 pkeyutl cannot read an empty message
            self.certificates[name].public_key().verify(signature, data)  # type: ignore[call-arg]
            return
        if digest:
            cmd = ["openssl", "dgst", digest, "-verify", str(pub), "-signature", str(sig), str(doc)]
        else:  # Ed25519 signs the message itself
            cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin", "-in", str(doc),
                   "-sigfile", str(sig)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Verified" in out.stdout, (name, out.stdout, out.stderr)

    def close(self) -> None:
        self.token.activate(self.hsm.pin)  # a test may have left it deactivated
        for alias in self.token.key_aliases():
            if alias.startswith(self.prefix):
                self.token.remove_key(alias)
        self.services.close()


@pytest.fixture(scope="module")
def setup(hsm, tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    s = Setup(hsm, root / "home", root)
    yield s
    s.close()


def count_general_path(monkeypatch, token) -> list[int]:
    """How many signatures take the general path (the token's acquire), from now on."""
    calls = [0]
    acquire = token.acquire

    async def counting(*args, **kwargs):
        calls[0] += 1
        return await acquire(*args, **kwargs)

    monkeypatch.setattr(token, "acquire", counting)
    return calls


def test_ecdsa_der_is_cryptographys_encoding() -> None:
    from signpeer_pkcs11token.keys import ecdsa_der

    samples = [os.urandom(n) for n in (64, 96, 132) for _ in range(2000)]
    for half in (32, 48, 66):  # leading zero bytes, top bits, zero values
        samples += [b"\0" * 2 * half, b"\0" * half + b"\x80" * half, b"\0\x80" + os.urandom(2 * half - 2),
                    b"\0\x7f" + os.urandom(2 * half - 2), b"\0\0\0\x01" + os.urandom(2 * half - 4), b"\xff" * 2 * half,
                    os.urandom(half) + b"\0" * (half - 1) + b"\x01"]
    for raw in samples:
        half = len(raw) // 2
        expected = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        assert ecdsa_der(raw) == expected, raw.hex()


def test_prepared_der_and_timing_on_every_case() -> None:
    """The hot path's DER of r‖s (``ecdsa_der``'s usual case written out, by the size of the
    key's last signature) gives ``cryptography``'s bytes in every case: random halves, leading
    zero bytes, top bits, a key of another size under the same alias. The device is a stand-in
    that answers the given r‖s: what is tested is the encoding and the timing, not the device."""
    import threading

    from signpeer_core.keys import signature_algorithm
    from signpeer_pkcs11token.keys import SignTiming
    from signpeer_pkcs11token.prepared import prepare_signer

    answers: list[bytes] = []

    class Device:  # the answers in order, as key.sign of python-pkcs11 would give them
        def sign(self, payload: bytes, mechanism: object) -> bytes:
            assert len(payload) == 32  # the SHA-256 digest, hashed on the host
            return answers.pop(0)

    class Wrapper:
        timing = SignTiming()

    class State:
        _pin: str | None = "1234"
        _lost: str | None = None

    Wrapper.timing.add(0.0001)
    sign = prepare_signer(State(), threading.RLock(), {"k": Device()}, {"k": Wrapper()}, "k",
                          signature_algorithm("SHA256withECDSA"), 1.0)
    assert sign is not None
    raws = [os.urandom(n) for n in (64, 64, 96, 64, 132) for _ in range(300)]
    for half in (32, 48, 66):
        raws += [b"\0" * 2 * half, b"\0" * half + b"\x80" * half, b"\0\x80" + os.urandom(2 * half - 2),
                 os.urandom(half) + b"\0\x7f" + os.urandom(half - 2), b"\xff" * 2 * half, b"\x80" * 2 * half,
                 b"\x01" * 2 * half, os.urandom(half) + b"\0" * (half - 1) + b"\x01"]
    answers.extend(raws)
    for raw in raws:
        half = len(raw) // 2
        signed = sign(b"document")
        assert signed is not None
        expected = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        assert signed[0] == expected, raw.hex()
        assert signed[1] >= 0.0
    # Fast signatures (the limit is a second) keep the estimate and leave no window behind.
    assert Wrapper.timing.estimate == 0.0001 and Wrapper.timing.samples == []


def test_prepared_signer_declines_after_32_slow_signatures_in_a_row() -> None:
    """The hot path times each signature against the inline limit: a fast one ends a run of
    slow ones, 32 slow ones in a row make the key slow, and the next call declines (the general
    path signs in a thread). The stand-in device answers at once: the limit is set under any
    real duration to make every signature "slow"."""
    import threading

    from signpeer_core.keys import signature_algorithm
    from signpeer_pkcs11token.keys import SignTiming
    from signpeer_pkcs11token.prepared import prepare_signer

    class Device:
        def sign(self, payload: bytes, mechanism: object) -> bytes:
            return b"\x11" * 64

    class Wrapper:
        timing = SignTiming()

    class State:
        _pin: str | None = "1234"
        _lost: str | None = None

    timing = Wrapper.timing
    limit = 1e-12
    timing.estimate = 0.0  # known fast
    sign = prepare_signer(State(), threading.RLock(), {"k": Device()}, {"k": Wrapper()}, "k",
                          signature_algorithm("SHA256withECDSA"), limit)
    assert sign is not None
    for _ in range(SignTiming.WINDOW - 1):
        assert sign(b"doc") is not None
    assert len(timing.samples) == SignTiming.WINDOW - 1 and timing.estimate == 0.0
    timing.samples[5:] = []
    timing.estimate, limit_fast = 0.0, 1.0  # a fast signature ends the run: seen through a fast signer
    fast = prepare_signer(State(), threading.RLock(), {"k": Device()}, {"k": Wrapper()}, "k",
                          signature_algorithm("SHA256withECDSA"), limit_fast)
    assert fast is not None and fast(b"doc") is not None and timing.samples == []
    for _ in range(SignTiming.WINDOW):
        assert sign(b"doc") is not None
    assert timing.estimate is not None and timing.estimate >= limit and timing.samples == []
    assert sign(b"doc") is None  # slow now: declined


def test_sign_timing_is_the_first_then_each_windows_fastest() -> None:
    from signpeer_pkcs11token.keys import SignTiming

    timing = SignTiming()
    assert not timing.fast(1.0)
    timing.add(0.5)  # the first signature decides at once: a slow key is known after one use
    assert timing.estimate == 0.5 and not timing.fast(0.1)
    for i in range(SignTiming.WINDOW - 1):
        timing.add(0.2 if i != 7 else 0.01)
    assert timing.estimate == 0.01 and timing.fast(0.1) and timing.samples == []
    for _ in range(SignTiming.WINDOW - 1):
        timing.add(0.3)
    assert timing.estimate == 0.01  # until the window is full
    timing.add(0.3)
    assert timing.estimate == 0.3 and not timing.fast(0.1)


@pytest.mark.parametrize("name", list(KEYS))
def test_prepared_signatures_verify_with_openssl(setup, monkeypatch, name):
    """P-384 takes longer than the inline limit in SoftHSM2 (so does Ed25519 on a loaded machine):
    the limit is raised here so that every key type's prepared signer runs."""
    import signpeer_pkcs11token.token

    monkeypatch.setattr(signpeer_pkcs11token.token, "INLINE_LIMIT", 1.0)
    signer = setup.signer(name)
    signer.refresh()  # prepared again, with the raised limit
    assert signer.status().active, signer.status().reasons
    for i in range(40):  # the first signatures time the key (SignTiming) on the general path
        setup.sign(name, b"warm-up %d" % i)
    general = count_general_path(monkeypatch, setup.token)
    documents = [os.urandom(size) for size in (0, 1, 1024, 70_000)] + [b"document %d\n" % i * 40 for i in range(8)]
    for data in documents:
        setup.openssl_verify(name, data, setup.sign(name, data))
    # The hot path fills its SignResponse without __init__: every field as __init__ sets it (a
    # field added later without a value here fails the comparison), a fresh metadata dict each.
    first, second = (asyncio.run(signer.process(SignRequest(data=b"fields", request_id=f"id{i}"))) for i in (1, 2))
    assert first == SignResponse(first.data, "id1", "id1", signer.chain[0])
    assert first.metadata == {} and first.metadata is not second.metadata
    assert general[0] == 0, "the signatures took the general path: the prepared signer declined"


def test_refusals_and_recovery_keep_their_messages(setup, hsm):
    """Everything the general path refuses or recovers from, on a signer whose hot path is warm:
    the same outcome, the same message (the prepared signer declines and the general path runs)."""
    from signpeer_pkcs11token import module as p11mod

    name = "Removable"
    for i in range(40):
        setup.sign(name, b"warm-up %d" % i)
    assert setup.signer(name)._prepared is not None
    token = setup.token

    # A request option PlainSigner does not know: refused as before the key is touched.
    with pytest.raises(SignpeerError) as caught:
        setup.sign(name, b"doc", {"DETACHEDSIGNATURE": "true"})
    assert caught.value.status == 400 and "DETACHEDSIGNATURE" in caught.value.message

    # The session closed behind the token's back: reopened, and the request signs.
    module = p11mod.load_module(hsm.module)
    with module.lock:
        module.raw.close_session(token._session.handle)
    setup.openssl_verify(name, b"after a lost session", setup.sign(name, b"after a lost session"))

    # Deactivated: refused with the general path's message; activated again: signs.
    token.deactivate()
    with pytest.raises(SignpeerError) as caught:
        setup.sign(name, b"doc")
    assert caught.value.message == (f"crypto token of worker '{TOKEN_WORKER}' is not activated; "
                                    f"run signpeer activatecryptotoken {TOKEN_WORKER}")
    assert caught.value.status == 503
    token.activate(hsm.pin)
    setup.openssl_verify(name, b"activated again", setup.sign(name, b"activated again"))

    # An expired signer certificate: refused whatever path would sign.
    with pytest.raises(SignpeerError) as caught:
        setup.sign("Expired", b"doc")
    assert caught.value.message == "worker 'Expired' is offline: the signer certificate is not valid now"

    # The key removed through signpeer (removekey): refused with the general path's message.
    alias = setup.signer(name).alias
    token.remove_key(alias)
    with pytest.raises(SignpeerError) as caught:
        setup.sign(name, b"doc")
    assert caught.value.message == f"worker '{name}' is offline: {no_key(hsm, alias)}"
    assert caught.value.status == 503

    # The key deleted by another process (pkcs11-tool): the cached handle is stale.
    name = "RemovedElsewhere"
    for i in range(40):
        setup.sign(name, b"warm-up %d" % i)
    alias = setup.signer(name).alias
    out = subprocess.run(["pkcs11-tool", "--module", hsm.module, "--token-label", hsm.label, "--login", "--pin", hsm.pin,
                          "--delete-object", "--type", "privkey", "--label", alias],
                         env=hsm.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with pytest.raises(SignpeerError) as caught:
        setup.sign(name, b"doc")
    assert caught.value.message == no_key(hsm, alias)
    assert caught.value.status == 404


def no_key(hsm, alias: str) -> str:
    return (f"no key '{alias}' in the token labelled '{hsm.label}' of {hsm.module}; generate it with signpeer "
            f"generatekey {TOKEN_WORKER} -keyalg EC -keyspec secp256r1 -alias {alias}")


def test_concurrent_requests_with_other_threads_in_the_module(setup):
    """64 requests at once on the event loop while two threads sign with the same key through
    the wrapper key (the way CSRs and CMS do) and a third holds the module lock now and then: the
    inline signer never waits for the lock (it declines and the request goes to a thread), and
    every signature verifies."""
    name = "P256"
    for i in range(40):
        setup.sign(name, b"warm-up %d" % i)
    signer = setup.signer(name)
    public = setup.certificates[name].public_key()
    key = setup.token.private_key(signer.alias)
    lock = setup.token._module.lock
    stop = threading.Event()
    problems: list[BaseException] = []

    def sign_in_thread() -> None:
        try:
            while not stop.is_set():
                data = os.urandom(64)
                public.verify(key.sign(data, ec.ECDSA(hashes.SHA256())), data, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:  # reported by the test below
            problems.append(exc)

    def hold_the_lock() -> None:
        while not stop.is_set():
            with lock:
                stop.wait(0.002)
            stop.wait(0.001)

    threads = [threading.Thread(target=sign_in_thread) for _ in range(2)] + [threading.Thread(target=hold_the_lock)]
    for t in threads:
        t.start()

    async def many() -> list[tuple[bytes, bytes]]:
        documents = [b"concurrent %d" % i for i in range(64)]
        responses = await asyncio.gather(*(signer.process(SignRequest(data=d, request_id=str(i)))
                                           for i, d in enumerate(documents)))
        return [(d, r.data) for d, r in zip(documents, responses, strict=True)]

    try:
        signed = []
        for _ in range(3):
            signed += asyncio.run(many())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems
    for data, signature in signed:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    setup.openssl_verify(name, *signed[-1])


def test_without_key_cache_there_is_no_prepared_signer(hsm, make_token):
    from signpeer_core.api import signature_algorithm

    token = make_token(hsm.props(CACHE_PRIVATEKEY="false"))
    token.auto_activate()
    try:
        assert token.prepared_signer("any", signature_algorithm("SHA256withECDSA")) is None
    finally:
        token.close()
