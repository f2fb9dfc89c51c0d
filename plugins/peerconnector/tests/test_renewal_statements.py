"""A peer renewal runs a handful of database statements, and one write transaction per change.

The worker is resolved once per operation and a change is published in one transaction (the
properties, every audit record and the generation bump), so the statement count of each peer
operation is small and fixed. Counted with SQLite's trace callback on the store's connection,
in process (no server needed). The soft token here keeps its keystore in the database
(INTERNAL): its own ``keystores`` writes are the token's, counted apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from signpeer_core.testing import PKI, add_signer
from signpeer_core.testing.postgres import on_postgresql
from signpeer_peerconnector.authz import PeerIdentity
from signpeer_peerconnector.renewal import Renewal

pytestmark = pytest.mark.skipif(on_postgresql(), reason="counts statements with SQLite's trace callback: runs "
                                "in the SQLite suite (the statements are the same SQLAlchemy Core on PostgreSQL)")

CA = PeerIdentity("CN=EJBCA Peer Connector, OU=Peers, O=signpeer tests", "CN=Test CA", 0x1F)


@dataclass
class Statements:
    """The SQL statements one operation ran, without those of the token's keystore."""

    raw: list[str] = field(default_factory=list)

    def add(self, statement: str) -> None:
        self.raw.append(statement.strip())

    def _split(self) -> tuple[list[list[str]], list[list[str]]]:
        """(ours, the token's): single reads and transactions; a transaction is the token's when
        everything in it is about its keystore."""
        units: list[list[str]] = []
        current: list[str] | None = None
        for statement in self.raw:
            if statement.upper().startswith("BEGIN"):
                current = [statement]
            elif current is not None:
                current.append(statement)
                if statement.upper() in ("COMMIT", "ROLLBACK"):
                    units.append(current)
                    current = None
            else:
                units.append([statement])
        ours, token = [], []
        for unit in units:
            body = [s for s in unit if s.upper() not in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")]
            (token if body and all("keystores" in s for s in body) else ours).append(unit)
        return ours, token

    @property
    def sql(self) -> list[str]:
        return [s for unit in self._split()[0] for s in unit]

    @property
    def selects(self) -> int:
        return sum(1 for s in self.sql if s.upper().startswith("SELECT"))

    @property
    def write_transactions(self) -> int:
        return sum(1 for s in self.sql if s.upper().startswith("BEGIN"))

    @property
    def statements(self) -> int:
        """Everything but the transaction brackets (BEGIN/COMMIT)."""
        return sum(1 for s in self.sql if s.upper() not in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"))

    @property
    def token_writes(self) -> int:
        return len(self._split()[1])


@contextmanager
def counted(store: Any) -> Iterator[Statements]:
    seen = Statements()
    # The SQLite backend's one connection, under SQLAlchemy: its trace callback sees every statement.
    conn = store.database._connection().connection.driver_connection
    conn.set_trace_callback(seen.add)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def test_next_key_csr_and_install_run_a_handful_of_statements(services: Any, pki: PKI) -> None:
    wid = add_signer(services, pki, "Signer1", PEERS_VISIBLE="true", KEYALG="ECDSA", KEYSPEC="secp256r1")
    services.runtime.load()
    renewal = Renewal(services)
    runs: dict[str, Statements] = {}

    def run(name: str, op: Callable[[], Any]) -> Any:
        with counted(services.store) as seen:
            result = op()
        runs[name] = seen
        return result

    answer = run("nextkey", lambda: renewal.next_key(wid, CA))
    assert answer["created"] and answer["nextKeyPairAlias"] == "signer00002"
    csr = run("csr", lambda: renewal.csr(wid, CA))
    assert csr.alias == "signer00002" and csr.for_next_key
    token = services.runtime.get(wid).token
    cert = pki.issue_signer(token.public_key("signer00002"), "CN=Signer1, O=signpeer tests")
    installed = run("install", lambda: renewal.install(wid, CA, [cert, pki.ca_cert]))
    assert installed["promoted"] and installed["keyPairAlias"] == "signer00002"
    again = run("nextkey again", lambda: renewal.next_key(wid, CA))
    assert again["created"] and again["nextKeyPairAlias"] == "signer00003"
    pending = run("nextkey pending", lambda: renewal.next_key(wid, CA))
    assert not pending["created"]

    for name, seen in runs.items():
        print(f"{name}: {seen.statements} statements ({seen.selects} SELECT), "
              f"{seen.write_transactions} write transaction(s); statements of the token's keystore: {seen.token_writes}")
    nextkey = runs["nextkey"]
    # Read the worker once; one transaction: NEXTCERTSIGNKEY, KEYGEN, SET_WORKER_CONFIG, KEYTEST,
    # RELOAD_WORKER_CONFIG, the generation bump; then this process rebuilds the worker.
    assert nextkey.write_transactions == 1, nextkey.sql
    assert nextkey.selects <= 5, nextkey.sql
    assert nextkey.statements <= 12, nextkey.sql
    assert runs["nextkey again"].statements == nextkey.statements
    # A CSR reads the worker and writes its GENCSR record (with the audit chain: its head read for
    # update, the last id, the head moved on).
    assert runs["csr"].write_transactions == 1 and runs["csr"].statements <= 5, runs["csr"].sql
    # An install: one transaction with the certificates, the key promotion (the superseded key
    # recorded in SUPERSEDEDKEYS), five audit records and the generation's scope (one upsert,
    # generations.record_scope: the other server processes rebuild this worker only).
    assert runs["install"].write_transactions == 1, runs["install"].sql
    assert runs["install"].selects <= 6 and runs["install"].statements <= 18, runs["install"].sql
    # A pending next key is answered from one read.
    assert runs["nextkey pending"].write_transactions == 0 and runs["nextkey pending"].statements <= 1
    # The token's keystore: nextkey lists the keys (one read), generates under the lock (one read,
    # one write transaction) and is reloaded (one read); the install reloads it (one read).
    assert nextkey.token_writes <= 4 and runs["csr"].token_writes == 0 and runs["install"].token_writes <= 1

    kinds = [e.event for e in services.store.audit_events(worker_id=wid, limit=20)]
    # Newest first: the second renewal's records, written together, in order.
    assert kinds[:4] == ["RELOAD_WORKER_CONFIG", "KEYTEST", "SET_WORKER_CONFIG", "KEYGEN"]
