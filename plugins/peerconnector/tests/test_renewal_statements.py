"""A peer renewal runs a handful of database statements: counted, per operation, on SQLite and
PostgreSQL (``SIGNPEER_TEST_DATABASE_URL=start``).

Counted through SQLAlchemy's engine events (:func:`signpeer_core.testing.counted`), in process
(no server needed), for what the peer endpoint runs per call: the operation and the binding it
answers with. The signer keeps its keys as ``connector renew-all`` benchmarks them: an INTERNAL
soft token (its PKCS#12 keystore in the database), whose keystore reads and write are counted
too. Each figure below is the bound of one operation; the comment says what the statements are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signpeer_core.testing import PASSWORD, PKI, Statements, add_signer, counted
from signpeer_peerconnector.authz import PeerIdentity
from signpeer_peerconnector.routes import PeerService

CA = PeerIdentity("CN=EJBCA Peer Connector, OU=Peers, O=signpeer tests", "CN=Test CA", 0x1F)


def test_next_key_csr_and_install_run_a_handful_of_statements(services: Any, pki: PKI) -> None:
    wid = add_signer(services, pki, "Signer1", PEERS_VISIBLE="true", KEYALG="ECDSA", KEYSPEC="secp256r1",
                     CRYPTOTOKEN_IMPLEMENTATION_CLASS="SoftCryptoToken", KEYSTORETYPE="INTERNAL",
                     KEYSTOREPASSWORD=PASSWORD)
    service = PeerService(services)
    database = services.store.database
    runs: dict[str, Statements] = {}

    def run(name: str, op: Callable[[], Any]) -> Any:
        with counted(database) as seen:
            result = op()
            binding = service.bindings.get(wid)  # every answer carries the binding
        runs[name] = seen
        return result, binding

    service.renewal.csr(wid, CA)  # a first audited write: this process learns the chain's head
    builds = services.runtime.builds
    answer, binding = run("nextkey", lambda: service.renewal.next_key(wid, CA))
    assert services.runtime.builds == builds  # NEXTCERTSIGNKEY alone: a copy of the worker, not a build
    assert answer["created"] and answer["nextKeyPairAlias"] == "signer00002"
    assert binding["nextKeyPairAlias"] == "signer00002" and binding["operationalStatus"] == "ONLINE"
    csr, _ = run("csr", lambda: service.renewal.csr(wid, CA))
    assert csr.alias == "signer00002" and csr.for_next_key
    token = services.runtime.get(wid).token
    cert = pki.issue_signer(token.public_key("signer00002"), "CN=Signer1, O=signpeer tests")
    installed, binding = run("install", lambda: service.renewal.install(wid, CA, [cert, pki.ca_cert]))
    assert installed["promoted"] and binding["keyPairAlias"] == "signer00002" and binding["peersIssued"]
    again, _ = run("nextkey again", lambda: service.renewal.next_key(wid, CA))
    assert again["created"] and again["nextKeyPairAlias"] == "signer00003"
    pending, _ = run("nextkey pending", lambda: service.renewal.next_key(wid, CA))
    assert not pending["created"]

    for name, seen in runs.items():
        print(f"{name}: {seen.summary()}; keystore statements: {len(seen.touching('keystores'))}")
        for sql in seen.sql:
            print("   ", sql[:150])
    # On PostgreSQL another node of a cluster may have published: each operation first reads the
    # configuration generation (Renewal._shared, one read).
    catch_up = 0 if database.dialect == "sqlite" else 1
    nextkey = runs["nextkey"]
    # The worker's properties (1 read); the token's keys listed (1 read), the keystore read again
    # under its lock and the new key written (1 read, 1 write transaction); then one transaction:
    # NEXTCERTSIGNKEY, the audit records (KEYGEN, SET_WORKER_CONFIG, KEYTEST,
    # RELOAD_WORKER_CONFIG: the head moved, the records), the generation bump and its scope (one
    # upsert: the other server processes rebuild this worker only). The worker is not rebuilt (only
    # NEXTCERTSIGNKEY changed: Runtime.reload_workers puts a copy with the new configuration in its
    # place), so its kept token does not look at its keystore again.
    assert nextkey.write_transactions == 2, nextkey.sql
    assert nextkey.reads <= 3 + catch_up and nextkey.statements <= 9 + catch_up, nextkey.sql
    assert runs["nextkey again"].statements == nextkey.statements
    # A CSR: the worker's properties, and its GENCSR record (the head moved, the record).
    csr_run = runs["csr"]
    assert csr_run.write_transactions == 1 and csr_run.reads <= 1 + catch_up and csr_run.statements <= 3 + catch_up, csr_run.sql
    # An install: the worker's properties; one transaction with the certificates, the key
    # promotion (the superseded key recorded in SUPERSEDEDKEYS), five audit records, the bump and
    # the generation's scope (one upsert, generations.record_scope: the other server processes
    # rebuild this worker only); the rebuilt worker's token looks at its keystore.
    install = runs["install"]
    assert install.write_transactions == 1 and install.reads <= 2 + catch_up and install.statements <= 8 + catch_up, install.sql
    # A pending next key: the worker's properties and the token's keys.
    assert runs["nextkey pending"].write_transactions == 0 and runs["nextkey pending"].statements <= 2 + catch_up

    kinds = [e.event for e in services.store.audit_events(worker_id=wid, limit=20)]
    # Newest first: the second renewal's records, written together, in order.
    assert kinds[:4] == ["RELOAD_WORKER_CONFIG", "KEYTEST", "SET_WORKER_CONFIG", "KEYGEN"]
    assert services.store.verify_audit_log().intact
