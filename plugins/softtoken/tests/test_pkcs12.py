"""The multi-key PKCS#12 format on its own, checked against openssl and cryptography's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_p12

from signpeer_core import devpki
from signpeer_core.keys import generate_software_key, parse_key_spec, placeholder_certificate
from signpeer_softtoken.pkcs12 import (
    KeyEntry,
    Keystore,
    KeystoreFormatError,
    KeystorePasswordError,
    _bmp_password,
    dump_keystore,
    load_keystore,
    pkcs12_kdf,
)


def entry(alias: str, keyalg: str = "ECDSA", keyspec: str = "P-256") -> KeyEntry:
    key = generate_software_key(parse_key_spec(keyalg, keyspec))
    return KeyEntry(alias, key, [placeholder_certificate(key, alias)])


def pem_bundle(tmp_path: Path, e: KeyEntry) -> Path:
    path = tmp_path / f"{e.alias}.pem"
    path.write_bytes(devpki.key_pem(e.key) + devpki.cert_pem(*e.chain))
    return path


def test_kdf_matches_published_vectors() -> None:
    # RFC 7292 appendix B.2 vectors as published with Bouncy Castle's PKCS#12 tests.
    smeg = _bmp_password("smeg")
    assert pkcs12_kdf("sha1", smeg, bytes.fromhex("0A58CF64530D823F"), 1, 1, 24).hex().upper() == \
        "8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3"
    assert pkcs12_kdf("sha1", smeg, bytes.fromhex("0A58CF64530D823F"), 2, 1, 8).hex().upper() == "79993DFE048D3B76"
    assert pkcs12_kdf("sha1", smeg, bytes.fromhex("3D83C0E4546AC140"), 3, 1, 20).hex().upper() == \
        "8D967D88F6CAA9D714800AB3D48051D63F73A312"
    assert pkcs12_kdf("sha1", _bmp_password("queeg"), bytes.fromhex("05DEC959ACFF72F7"), 1, 1000, 24).hex().upper() == \
        "ED2034E36328830FF09DF1E1A07DD357185DAC0D4F9EB3D4"


def test_round_trip_several_keys_with_shared_ca() -> None:
    ca_key, ca = devpki.make_ca("CN=Shared CA")
    entries = [entry("rsa", "RSA", "2048"), entry("ec", "ECDSA", "P-521"), entry("ed", "Ed25519", "")]
    for e in entries[:2]:
        e.chain = [devpki.issue(ca_key, ca, f"CN={e.alias}", e.key.public_key()), ca]
    data = dump_keystore(entries, "pw")
    loaded = load_keystore(data, "pw")
    assert list(loaded.entries) == ["rsa", "ec", "ed"]
    for e in entries:
        got = loaded.entries[e.alias]
        assert got.chain == e.chain
        assert got.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()) == \
            e.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(KeystorePasswordError):
        load_keystore(data, "wrong")


def test_openssl_reads_every_entry_and_the_shared_ca_once(tmp_path, run_openssl) -> None:  # type: ignore[no-untyped-def]
    ca_key, ca = devpki.make_ca("CN=Shared CA")
    entries = [entry("one"), entry("two")]
    for e in entries:
        e.chain = [devpki.issue(ca_key, ca, f"CN={e.alias}", e.key.public_key()), ca]
    (tmp_path / "ks.p12").write_bytes(dump_keystore(entries, "pw"))
    out = run_openssl("pkcs12", "-info", "-in", str(tmp_path / "ks.p12"), "-passin", "pass:pw", "-nodes")
    assert out.returncode == 0, out.stderr
    assert "MAC: sha256, Iteration 10000" in out.stderr
    assert out.stderr.count("Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256") == 2
    assert "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC" in out.stderr
    assert out.stdout.count("BEGIN PRIVATE KEY") == 2
    assert out.stdout.count("subject=CN = Shared CA") == 1
    assert out.stdout.count("friendlyName: one") == 2  # on the key bag and its certificate
    bad = run_openssl("pkcs12", "-info", "-in", str(tmp_path / "ks.p12"), "-passin", "pass:wrong", "-nokeys")
    assert bad.returncode != 0 and "mac verify" in bad.stderr.lower()


def test_cryptography_reads_a_single_entry_file() -> None:
    ca_key, ca = devpki.make_ca("CN=CA")
    e = entry("solo")
    e.chain = [devpki.issue(ca_key, ca, "CN=solo", e.key.public_key()), ca]
    loaded = crypto_p12.load_pkcs12(dump_keystore([e], "pw"), b"pw")
    assert loaded.cert is not None and loaded.cert.friendly_name == b"solo"
    assert loaded.cert.certificate == e.chain[0]
    assert [c.certificate for c in loaded.additional_certs] == [ca]


@pytest.mark.parametrize(
    ("args", "label"),
    [
        ((), "openssl defaults (PBES2/AES, SHA-256 MAC)"),
        (("-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"), "3DES, SHA-1 MAC"),
        (("-legacy",), "RC2-40 certificates (read through cryptography)"),
        (("-nomac",), "no MAC"),
    ],
)
def test_reads_keystores_made_by_openssl(tmp_path, run_openssl, args, label) -> None:  # type: ignore[no-untyped-def]
    e = entry("from-openssl")
    out = run_openssl("pkcs12", "-export", "-in", str(pem_bundle(tmp_path, e)), "-name", "from-openssl",
                      "-passout", "pass:pw", "-out", str(tmp_path / "o.p12"), *args)
    if out.returncode != 0 and args == ("-legacy",):
        pytest.skip(f"openssl has no legacy provider: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "o.p12").read_bytes()
    loaded = load_keystore(data, "pw")
    assert list(loaded.entries) == ["from-openssl"], label
    assert loaded.entries["from-openssl"].chain == e.chain
    with pytest.raises(KeystorePasswordError):
        load_keystore(data, "wrong")


def test_entries_it_does_not_model_survive_a_rewrite(tmp_path, run_openssl) -> None:  # type: ignore[no-untyped-def]
    _, trusted = devpki.make_ca("CN=Trusted Root")
    truststore = crypto_p12.serialize_java_truststore(
        [crypto_p12.PKCS12Certificate(trusted, b"trusted-root")], serialization.BestAvailableEncryption(b"pw"))
    keystore = load_keystore(truststore, "pw")
    assert keystore.entries == {} and len(keystore.other_bags) == 1
    keystore.entries["k"] = entry("k")
    data = dump_keystore(keystore, "pw")
    again = load_keystore(data, "pw")
    assert list(again.entries) == ["k"] and len(again.other_bags) == 1
    (tmp_path / "ks.p12").write_bytes(data)
    out = run_openssl("pkcs12", "-info", "-in", str(tmp_path / "ks.p12"), "-passin", "pass:pw", "-nokeys")
    assert "friendlyName: trusted-root" in out.stdout and "subject=CN = Trusted Root" in out.stdout


def test_empty_keystore_and_damaged_data() -> None:
    empty = dump_keystore(Keystore(), "pw")
    assert load_keystore(empty, "pw").entries == {}
    with pytest.raises(KeystorePasswordError):
        load_keystore(empty, "other")
    data = dump_keystore([entry("k")], "pw")
    for damaged in (b"", b"\x30\x03\x02\x01", data[:-40], data + b"trailing", b"-----BEGIN CERTIFICATE-----\n"):
        with pytest.raises(KeystoreFormatError):
            load_keystore(damaged, "pw")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    with pytest.raises((KeystorePasswordError, KeystoreFormatError)):  # the MAC catches any changed byte
        load_keystore(bytes(flipped), "pw")


def test_duplicate_alias_in_a_foreign_file_is_rejected() -> None:
    a, b = entry("same"), entry("other")
    b.alias = "same"
    with pytest.raises(KeystoreFormatError, match="'same' is used by two keys"):
        load_keystore(dump_keystore([a, b], "pw"), "pw")


def _key_bags(data: bytes) -> list[bytes]:
    from asn1crypto import pkcs12 as asn1_p12

    pfx = asn1_p12.Pfx.load(data, strict=True)
    out = []
    for info in asn1_p12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
        if info["content_type"].native == "data":
            out += [bag.dump() for bag in asn1_p12.SafeContents.load(info["content"].native)]
    return out


def test_the_written_file_is_canonical_der() -> None:
    from asn1crypto import pkcs12 as asn1_p12

    ca_key, ca = devpki.make_ca("CN=Shared CA")
    entries = [entry("one"), entry("two", "RSA", "2048")]
    entries[0].chain = [devpki.issue(ca_key, ca, "CN=one", entries[0].key.public_key()), ca]
    data = dump_keystore(entries, "pw")
    pfx = asn1_p12.Pfx.load(data, strict=True)
    pfx.native  # noqa: B018 - parses every part
    assert pfx.dump(force=True) == data  # asn1crypto's own encoding of what it read: byte for byte


def test_a_rewrite_encrypts_only_the_new_key_and_reuses_what_it_read() -> None:
    first = dump_keystore([entry("one")], "pw")
    loaded = load_keystore(first, "pw")
    loaded.entries["two"] = entry("two")
    second = dump_keystore(loaded, "pw")
    bags_first, bags_second = _key_bags(first), _key_bags(second)
    assert bags_second[0] == bags_first[0]  # key "one" as it was read, not encrypted again
    assert len(bags_second) == 2 and bags_second[1] not in bags_first
    again = load_keystore(second, "pw")
    assert sorted(again.entries) == ["one", "two"]
    # Another password: every key is encrypted again (the kept forms are for the old one).
    third = dump_keystore(again, "other")
    assert not set(_key_bags(third)) & set(bags_second)
    assert sorted(load_keystore(third, "other").entries) == ["one", "two"]


def test_a_re_read_decodes_only_the_bags_it_has_not_seen() -> None:
    """``load_keystore(known=)``: another process added a key; the re-read takes the bags it decoded
    before as they were (the same key objects) and decodes the new ones, with the MAC still checked."""
    ca_key, ca = devpki.make_ca("CN=Shared CA")
    one = entry("one")
    one.chain = [devpki.issue(ca_key, ca, "CN=one", one.key.public_key()), ca]
    before = load_keystore(dump_keystore([one], "pw"), "pw")
    elsewhere = load_keystore(dump_keystore([one], "pw"), "pw")  # the other process's copy
    elsewhere.entries["two"] = entry("two")
    second = dump_keystore(elsewhere, "pw")

    again = load_keystore(second, "pw", known=before)
    full = load_keystore(second, "pw")
    assert list(again.entries) == list(full.entries) == ["one", "two"]
    assert again.entries["one"].key is before.entries["one"].key  # not decrypted again
    assert again.entries["two"].key is not elsewhere.entries["two"].key  # decoded: new to this reader
    assert public_key_bytes(again.entries["two"].key) == public_key_bytes(elsewhere.entries["two"].key)
    for alias in full.entries:
        assert again.entries[alias].chain == full.entries[alias].chain
        assert again.entries[alias].encrypted == full.entries[alias].encrypted
    assert again.other_bags == full.other_bags
    # What was decoded this time is what the next re-read starts from.
    assert load_keystore(second, "pw", known=again).entries["two"].key is again.entries["two"].key

    damaged = bytearray(second)
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises((KeystorePasswordError, KeystoreFormatError)):
        load_keystore(bytes(damaged), "pw", known=again)  # the MAC is checked whatever was known
    with pytest.raises(KeystorePasswordError):
        load_keystore(second, "wrong", known=again)
    # Bags known under another password are decoded again.
    rekeyed = dump_keystore([e.copy() for e in again.entries.values()], "other")
    assert load_keystore(rekeyed, "other", known=again).entries["one"].key is not before.entries["one"].key
    # A keystore as written is known as well: its writer decodes none of its own bags on a re-read.
    written = dump_keystore(elsewhere, "pw")
    assert load_keystore(written, "pw", known=elsewhere).entries["two"].key is elsewhere.entries["two"].key


def public_key_bytes(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_re_read_checks_each_chain_signature_once() -> None:
    """A keystore read keeps the chains' signature checks (``build_chain(verified=)``) for the next
    read; the check decides between two CAs of the same name."""
    from signpeer_core.api import build_chain

    ca_key, ca = devpki.make_ca("CN=Same Name CA")
    _, twin = devpki.make_ca("CN=Same Name CA")  # same subject, another key
    one = entry("one")
    leaf = devpki.issue(ca_key, ca, "CN=one", one.key.public_key())
    verified: dict = {}
    assert build_chain(leaf, [twin, ca], verified) == [leaf, ca]  # by signature, not the first by name
    assert verified == {(leaf, twin): False, (leaf, ca): True}
    assert build_chain(leaf, [twin, ca], {(leaf, twin): True}) == [leaf, twin]  # the recorded answer is used

    one.chain = [leaf, ca]
    read = load_keystore(dump_keystore(Keystore({"one": one}), "pw"), "pw")
    assert read.decoded is not None and read.decoded.verified == {(leaf, ca): True}
    assert load_keystore(dump_keystore(read, "pw"), "pw", known=read).entries["one"].chain == [leaf, ca]
