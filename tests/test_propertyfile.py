"""SignServer property files: Java .properties syntax, setproperties rules, all-or-nothing, round trip."""

from __future__ import annotations

from typing import Any

import pytest

from signpeer_core.admin import WorkerAdmin
from signpeer_core.errors import BadRequestError, ConflictError
from signpeer_core.propertyfile import apply_property_text, dump_properties, parse_properties
from signpeer_core.storage import Admin

# SignServer's sample from signserver-interfaces.md, exactly as documented (inline comments included).
SAMPLE = """\
# a crypto worker holding a PKCS#12 keystore
WORKERGENID1.TYPE=CRYPTO_WORKER
WORKERGENID1.IMPLEMENTATION_CLASS=org.signserver.server.signers.CryptoWorker
WORKERGENID1.CRYPTOTOKEN_IMPLEMENTATION_CLASS=org.signserver.server.cryptotokens.KeystoreCryptoToken
WORKERGENID1.NAME=CryptoTokenP12
WORKERGENID1.KEYSTORETYPE=PKCS12            # or INTERNAL (keys kept in the database)
WORKERGENID1.KEYSTOREPATH=/path/keystore.p12
WORKERGENID1.KEYSTOREPASSWORD=foo123        # optional: auto-activation

# a CMS signer using it
WORKERGENID2.TYPE=PROCESSABLE
WORKERGENID2.IMPLEMENTATION_CLASS=org.signserver.module.cmssigner.CMSSigner
WORKERGENID2.NAME=CMSSigner
WORKERGENID2.AUTHTYPE=NOAUTH
WORKERGENID2.CRYPTOTOKEN=CryptoTokenP12
WORKERGENID2.DEFAULTKEY=signer00003
WORKERGENID2.DETACHEDSIGNATURE=FALSE

# a PKCS#11 crypto worker
WORKERGENID3.TYPE=CRYPTO_WORKER
WORKERGENID3.IMPLEMENTATION_CLASS=org.signserver.server.signers.CryptoWorker
WORKERGENID3.CRYPTOTOKEN_IMPLEMENTATION_CLASS=org.signserver.server.cryptotokens.PKCS11CryptoToken
WORKERGENID3.NAME=CryptoTokenP11
WORKERGENID3.SHAREDLIBRARY=/usr/lib/softhsm/libsofthsm2.so   # SignServer also has SHAREDLIBRARYNAME (a name mapped to a path at deploy time)
WORKERGENID3.SLOTLABELTYPE=TOKEN_LABEL      # or SLOT_NUMBER, SLOT_INDEX
WORKERGENID3.SLOTLABELVALUE=mytoken
WORKERGENID3.PIN=foo123                     # optional: auto-activation
WORKERGENID3.DEFAULTKEY=testkey0
"""


@pytest.fixture
def admin(services: Any) -> WorkerAdmin:
    return WorkerAdmin(services, Admin("tester"))


def snapshot(admin: WorkerAdmin) -> tuple[dict[int, dict[str, str]], dict[str, str], int]:
    store = admin.store
    return store.all_worker_properties(), store.global_properties(), len(store.audit_events(limit=100000))


def test_java_properties_syntax() -> None:
    text = (
        "# comment\n"
        "! also a comment\n"
        "   \n"
        "a=b\n"
        "  spaced : value with spaces   \n"
        "colon:x\n"
        "ws only\n"
        "esc\\=key = v\\:1\\#not-a-comment\n"
        "cont = first \\\n"
        "       second\\\\\n"
        "uni=caf\\u00e9\\tX\n"
        "empty=\n"
        "bare\n"
        "val = x   # trailing comment\n"
        "hash=a#b\n"
        "dn=CN=Signer #2\n"
        "tabbed=y\t# note\n"
    )
    got = [(e.key, e.value) for e in parse_properties(text)]
    assert got == [("a", "b"), ("spaced", "value with spaces"), ("colon", "x"), ("ws", "only"),
                   ("esc=key", "v:1#not-a-comment"), ("cont", "first second\\"), ("uni", "café\tX"),
                   ("empty", ""), ("bare", ""), ("val", "x"), ("hash", "a#b"),
                   ("dn", "CN=Signer #2"), ("tabbed", "y")]
    assert parse_properties("k=v\n")[0].line == 1
    with pytest.raises(BadRequestError, match="line 1"):
        parse_properties("k=\\u12G4")


def test_signserver_sample_loads_as_it_is(admin: WorkerAdmin) -> None:
    result = apply_property_text(admin, SAMPLE)
    assert result.created == {"WORKERGENID1": 1, "WORKERGENID2": 2, "WORKERGENID3": 3}
    p12 = admin.worker_config("CryptoTokenP12")
    assert p12.worker_id == 1
    assert p12["KEYSTORETYPE"] == "PKCS12" and p12["KEYSTOREPASSWORD"] == "foo123"
    assert admin.worker_config("cmssigner")["CRYPTOTOKEN"] == "CryptoTokenP12"
    assert admin.worker_config(3)["SHAREDLIBRARY"] == "/usr/lib/softhsm/libsofthsm2.so"
    # The Java class names map to signpeer's registered types when the workers load.
    registry = admin.services.registry
    # (KeystoreCryptoToken is the soft token plugin's: plugins/softtoken/tests checks that name.)
    assert registry.worker_types.get(p12["IMPLEMENTATION_CLASS"], "x").__name__ == "CryptoWorker"
    admin.reload("all")
    # One SET_WORKER_CONFIG per worker; the password is not in the log.
    audit = admin.store.audit_events(event="SET_WORKER_CONFIG")
    assert sorted(e.worker_id for e in audit) == [1, 2, 3]
    assert all(v == "********" for e in audit for k, v in e.details.items() if "PASSWORD" in k or k.endswith("PIN"))
    assert any("Setting the property KEYSTOREPASSWORD to ********" in m for m in result.messages)


def test_genid_references_worker_and_name_prefixes_globals_and_removal(admin: WorkerAdmin) -> None:
    admin.create_worker({"NAME": "Existing", "IMPLEMENTATION_CLASS": "PlainSigner", "OLD": "x"}, worker_id=5)
    text = """
workergenid1.name = Token
WORKERGENID1.IMPLEMENTATION_CLASS=CryptoWorker
WORKERGENID2.NAME=Signer
WORKERGENID2.CRYPTOTOKEN=GENID1
WORKERGENID2.OTHER=see GENID2 and GENID9
WORKER5.NEW=1
ID5.ALSO=2
-WORKER5.OLD
NAMEexisting.VIA_NAME=3
NAMEBrandNew.IMPLEMENTATION_CLASS=PlainSigner
GLOB.PEERS_INCOMING_ENABLED=true
NODE.MYSETTING=n
-GLOB.NOT_THERE
"""
    result = apply_property_text(admin, text)
    token_id, signer_id = result.created["WORKERGENID1"], result.created["WORKERGENID2"]
    assert (token_id, signer_id) == (6, 7)
    signer = admin.worker_config("Signer")
    assert signer["CRYPTOTOKEN"] == "6" and signer["OTHER"] == "see 7 and GENID9"
    existing = admin.worker_config(5)
    assert existing["NEW"] == "1" and existing["ALSO"] == "2" and existing["VIA_NAME"] == "3" and "OLD" not in existing
    assert admin.worker_config("brandnew")["NAME"] == "BrandNew"
    node = admin.services.settings.node_id.upper()
    globals_ = admin.global_config()
    assert globals_["GLOB.PEERS_INCOMING_ENABLED"] == "true" and globals_[f"NODE.{node}.MYSETTING"] == "n"
    assert not admin.store.audit_events(event="REMOVE_GLOBAL_PROPERTY")  # it was not set


@pytest.mark.parametrize("text, error", [
    ("WORKERGENID1.NAME=A\nBOGUS.KEY=1\n", BadRequestError),               # unknown prefix
    ("WORKERGENID1.NAME=A\nWORKERGENID2.NAME=a\n", ConflictError),          # duplicate names
    ("WORKERGENID1.NAME=Existing\n", ConflictError),                        # clashes with an existing worker
    ("WORKERGENID1.NAME=A\nWORKERNoSuch.X=1\n", BadRequestError),           # WORKER<name> of no worker
    ("WORKERGENID1.NAME=A\nWORKER1.AUTHCLIENT1.SUBJECT.TYPE=CERTIFICATE_SERIALNO\n", BadRequestError),
    ("WORKERGENID1.NAME=A\nWORKER0.X=1\n", BadRequestError),                # id 0
    ("WORKERGENID1.NAME=42\n", BadRequestError),                            # numeric name
    ("GLOB.X=1\nWORKERGENID1.NAME=A\nk=\\uZZZZ\n", BadRequestError),       # bad escape
])
def test_a_bad_file_changes_nothing(admin: WorkerAdmin, text: str, error: type[Exception]) -> None:
    admin.create_worker({"NAME": "Existing", "IMPLEMENTATION_CLASS": "PlainSigner"})
    before = snapshot(admin)
    with pytest.raises(error):
        apply_property_text(admin, text)
    assert snapshot(admin) == before


def test_dump_loads_back_to_the_same_configuration(admin: WorkerAdmin, services: Any, tmp_path: Any) -> None:
    apply_property_text(admin, SAMPLE)
    admin.set_property("CMSSigner", "WEIRD", "  lead, tab\there # hash ! bang = eq : colon \\ é 😀\nnext")
    admin.set_global("node", "NODEPROP", "n1")
    original = admin.store.all_worker_properties(), admin.global_config()
    dumped = dump_properties(admin, "all")
    dumped.encode("ascii")  # Java reads property files as ISO-8859-1: non-ASCII is escaped
    assert "WORKER2.NAME=CMSSigner" in dumped and "GLOB." in dumped

    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    other_home = tmp_path / "other"
    other_home.mkdir()
    other = Services.open(load_settings(other_home), load=False)
    try:
        other_admin = WorkerAdmin(other, Admin("tester"))
        apply_property_text(other_admin, dumped)
        assert other.store.all_worker_properties() == original[0]
        assert other.store.global_properties() == original[1]
        # loading it again over itself changes nothing either
        apply_property_text(other_admin, dumped)
        assert other.store.all_worker_properties() == original[0]
    finally:
        other.close()

    single = dump_properties(admin, "CMSSigner")
    assert "WORKER2." in single and "WORKER1." not in single and "GLOB." not in single


def test_dump_keeps_other_nodes_properties_as_notes(admin: WorkerAdmin) -> None:
    admin.store.update_global({"NODE.OTHERNODE.X": "1"})
    dumped = dump_properties(admin, "all")
    assert "# other node: NODE.OTHERNODE.X=1" in dumped
