"""SignServer AdminCLI commands kept for old scripts: setpropertyfromfile, getstatusproperties,
querytokenentries (syntax and output as SignServer's), on fixtures of our own."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from signpeer_core.testing import add_signer


def test_setpropertyfromfile_stores_the_files_bytes_in_base64(home: Path, services: Any, pki: Any, signpeer: Any,
                                                              tmp_path: Path) -> None:
    wid = add_signer(services, pki, "FileSigner")
    data = bytes(range(256)) + b"\n# not a comment\n"
    (tmp_path / "data.bin").write_bytes(data)
    r = signpeer.in_process("setpropertyfromfile", "FileSigner", "myData", str(tmp_path / "data.bin"))
    assert r.code == 0, r.err
    assert f"Setting the property MYDATA to data from file for worker {wid}" in r.out
    assert "activate it with the reload command" in r.out
    assert base64.b64decode(services.store.worker_properties(wid)["MYDATA"]) == data

    r = signpeer.in_process("setpropertyfromfile", "global", "blob", str(tmp_path / "data.bin"))
    assert r.code == 0 and "Setting the global property GLOB.BLOB with data from file with scope GLOB." in r.out, r
    assert base64.b64decode(services.store.global_properties()["GLOB.BLOB"]) == data

    missing = signpeer.in_process("setpropertyfromfile", "FileSigner", "X", str(tmp_path / "nope.bin"))
    assert missing.code == 254 and "no such file" in missing.err
    assert signpeer.in_process("setpropertyfromfile", "FileSigner", "X").code == 255  # wrong usage


def test_getstatusproperties_prints_signservers_header_and_says_why_it_is_empty(home: Path, services: Any,
                                                                                signpeer: Any) -> None:
    r = signpeer.in_process("getstatusproperties")
    assert r.code == 0
    assert r.out.split() == ["Property", "Updated", "Expiration", "Value"]
    assert "no status repository" in r.err
    assert signpeer.in_process("getstatusproperties", "extra").code == 255


def test_querytokenentries_lists_filters_and_pages(home: Path, services: Any, pki: Any, signpeer: Any) -> None:
    add_signer(services, pki, "Entries")
    for alias in ("signer00002", "other1", "signer00003"):
        assert signpeer.in_process("generatekey", "Entries", "-keyalg", "ECDSA", "-keyspec", "secp256r1",
                                   "-alias", alias).code == 0
    r = signpeer.in_process("querytokenentries", "-token", "Entries")
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["0: other1", "1: signer00001", "2: signer00002", "3: signer00003",
                                  "... no more entries."]
    r = signpeer.in_process("querytokenentries", "-token", "Entries", "-criteria", "alias LIKE signer%",
                            "-criteria", "alias NEQ signer00002", "-v")
    assert r.code == 0, r.err
    assert "0: signer00001" in r.out and "1: signer00003" in r.out and "signer00002" not in r.out
    assert "   Type: PRIVATEKEY_ENTRY" in r.out and "   Key: EC secp256r1" in r.out
    # The chain stored in the token: for a new key SignServer's placeholder certificate.
    assert "Subject: CN=signer00003, L=_SignServer_DUMMY_CERT_, C=SE" in r.out
    r = signpeer.in_process("querytokenentries", "-token", "Entries", "-from", "1", "-limit", "2")
    assert r.out.splitlines() == ["1: signer00001", "2: signer00002", "... 1 more entries exists."]
    bad = signpeer.in_process("querytokenentries", "-token", "Entries", "-criteria", "alias GT x")
    assert bad.code == 255 and "EQ, NEQ, LIKE" in bad.err
    assert signpeer.in_process("querytokenentries", "-token", "Entries", "-limit", "0").code == 255
    assert signpeer.in_process("querytokenentries", "-token", "NoSuch").code == 254
