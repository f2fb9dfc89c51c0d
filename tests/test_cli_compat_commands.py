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


def test_auditlog_query_with_signservers_criteria_and_header(home: Path, services: Any, pki: Any,
                                                             signpeer: Any) -> None:
    import time

    wid = add_signer(services, pki, "Audited")
    before_ms = int(time.time() * 1000) - 1
    for alias in ("k1", "k2", "k3"):
        assert signpeer.in_process("generatekey", "Audited", "-keyalg", "ECDSA", "-keyspec", "secp256r1",
                                   "-alias", alias).code == 0
    r = signpeer.in_process("-host", "signserver.example", "auditlog", "-query", "-limit", "10",
                            "-criteria", "eventType EQ KEYGEN", "-criteria", f"searchDetail2 EQ {wid}",
                            "-criteria", f"timeStamp GT {before_ms}", "-header")
    assert r.code == 0, r.err
    lines = [line for line in r.out.splitlines() if line]
    assert lines[0].startswith("Time, Outcome, Event, Module, Admin Subject")
    assert lines[1] == ("timeStamp, eventStatus, eventType, module, authToken, customId, searchDetail1, "
                        "searchDetail2, nodeId, additionalDetails")
    rows = lines[2:]
    assert len(rows) == 3, r.out
    # Newest first; SignServer's columns: time, event, outcome, module, admin, issuer, serial, worker, node, details.
    fields = rows[0].split(", ", 9)
    assert fields[1:4] == ["KEYGEN", "SUCCESS", "KEY_MANAGEMENT"] and fields[7] == str(wid) and fields[8] not in ("", "null")
    written_by = fields[8]  # the node of the CLI's process (settings' node_id, default the host name)
    assert fields[0].endswith("+0000") and "KEYALIAS=k3" in fields[9]
    assert "KEYALIAS=k1" in rows[2]

    like = signpeer.in_process("auditlog", "-query", "-limit", "10", "-criteria", "additionalDetails LIKE %k2%",
                               "-criteria", "eventType EQ KEYGEN")
    assert [line for line in like.out.splitlines() if line and "KEYGEN" in line] == \
        [line for line in like.out.splitlines() if "KEYALIAS=k2" in line]
    paged = signpeer.in_process("auditlog", "-query", "-limit", "1", "-from", "1", "-criteria", "eventType EQ KEYGEN")
    assert [line for line in paged.out.splitlines() if line][0].count("KEYALIAS=k2") == 1
    none = signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", "customId NOTNULL",
                               "-criteria", "eventType EQ KEYGEN")
    assert "KEYGEN" not in none.out  # the CLI user has no certificate issuer

    assert signpeer.in_process("auditlog", "-query").code == 254  # SignServer: "Must specify a limit."
    node = signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", "nodeId EQ some-other-node")
    assert node.code == 0 and "KEYGEN" not in node.out  # no record of this home's node matches another node
    mine = signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", f"nodeId EQ {written_by}",
                               "-criteria", "eventType EQ KEYGEN")
    assert mine.code == 0 and "KEYGEN" in mine.out
    service = signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", "service EQ x")
    assert service.code == 254 and "do not record 'service'" in service.err
    assert signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", "bogus EQ 1").code == 255
    assert signpeer.in_process("auditlog", "-query", "-limit", "5", "-criteria", "sequenceNumber EQ x").code == 254
    assert signpeer.in_process("auditlog", "-header").code == 254  # -header belongs to -query


def _examples(section: str) -> list[list[str]]:
    """The ``signpeer …`` lines of a docs/cli.md section's code blocks, split as a shell would."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    lines = [line for block in re.findall(r"```\n(.*?)```", body, flags=re.S)
             for line in block.replace("\\\n", " ").splitlines() if line.startswith("signpeer ")]
    return [shlex.split(line)[1:] for line in lines]


def test_the_cli_md_examples_of_these_commands_work(home: Path, services: Any, pki: Any, signpeer: Any,
                                                     tmp_path: Path, monkeypatch: Any) -> None:
    add_signer(services, pki, "CMSSigner", implementation="CMSSigner")
    add_signer(services, pki, "CryptoTokenP11")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.bin").write_bytes(b"\x00\x01 data")
    ran = 0
    for section in ("setpropertyfromfile / getstatusproperties", "querytokenentries", "auditlog"):
        for argv in _examples(section):
            if "--verify" in argv:
                continue  # the chain check has its own tests (test_audit_chain.py)
            r = signpeer.in_process(*argv)
            assert r.code == 0, (argv, r.err)
            ran += 1
    assert ran >= 5
