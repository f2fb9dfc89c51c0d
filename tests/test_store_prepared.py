"""Prepared reads (the hot reads' fast path): the rows of ``Connection.execute``, compiled once,
seeing the writes of the transaction they run in, refusing what needs SQLAlchemy's type handling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from signpeer_core.storage import Admin, AuditEvent, Store, open_store
from signpeer_core.storage.tables import audit_log, keystores, worker_properties


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.close()


def test_prepared_read_gives_the_rows_of_execute(store: Store) -> None:
    store.update_worker(4, {"NAME": "Signer", "DEFAULTKEY": "k"})
    store.update_worker(5, {"NAME": "Other"})
    statement = (select(worker_properties.c.key, worker_properties.c.value)
                 .where(worker_properties.c.worker_id == bindparam("worker_id")).order_by(worker_properties.c.key))
    prepared = store.database.prepare(statement)
    with store.database.read() as conn:
        expected = [tuple(row) for row in conn.execute(statement, {"worker_id": 4})]
    assert prepared.all({"worker_id": 4}) == expected == [("DEFAULTKEY", "k"), ("NAME", "Signer")]
    assert prepared.all({"worker_id": 99}) == [] and prepared.scalar({"worker_id": 99}) is None
    assert prepared.scalar({"worker_id": 5}) == "NAME"


def test_prepared_read_inside_a_transaction_sees_its_writes(store: Store) -> None:
    read = store.database.prepare(select(keystores.c.data).where(keystores.c.worker_id == bindparam("w")))
    with store.database.transaction() as conn:
        conn.execute(store.keystores._put, {"worker_id": 1, "data": b"\x00bytes", "updated": 1.0})
        assert bytes(read.scalar({"w": 1})) == b"\x00bytes"
    assert store.keystore(1) == b"\x00bytes"


def test_prepared_read_converts_parameters_and_refuses_expanding_ones(store: Store) -> None:
    store.update_worker(1, {"NAME": "A"}, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("t"), 1)])
    since = store.database.prepare(select(audit_log.c.event).where(
        audit_log.c.time >= bindparam("since", type_=audit_log.c.time.type)))
    assert since.all({"since": 0}) == [("SET_WORKER_CONFIG",)] and since.all({"since": 1e12}) == []
    with pytest.raises(ValueError, match="'ids' needs"):
        store.database.prepare(select(audit_log.c.id).where(audit_log.c.worker_id.in_(bindparam("ids", expanding=True))))


def test_memo_builds_a_statement_once_per_database(store: Store, tmp_path: Path) -> None:
    """Short-lived stores (one per request) keep their compiled statements on the database."""
    builds: list[int] = []
    statement = select(worker_properties.c.value).where(worker_properties.c.worker_id == bindparam("w"))

    def build() -> object:
        builds.append(1)
        return store.database.prepare(statement)

    first = store.database.memo("tests.value", build)
    assert store.database.memo("tests.value", build) is first and len(builds) == 1
    other = open_store(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        assert other.database.memo("tests.value", lambda: other.database.prepare(statement)) is not first
    finally:
        other.close()
