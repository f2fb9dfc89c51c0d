"""Keys in a worker's crypto token: generate, generate the next key for renewal, test, remove.

A token is not part of the database transaction, so a key operation touches the token first
(files, HSM) and then writes, in ONE transaction, the properties it changes with all of its audit
records (KEYGEN, KEYTEST, SET_WORKER_CONFIG, KEYREMOVE) and, when published, the generation bump.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from signpeer_core.administration.key_retirement import KeyRetirement
from signpeer_core.administration.publishing import Change, stage
from signpeer_core.audit import KEY_MANAGEMENT, AuditEvent
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import BadRequestError, ConfigurationError, ConflictError, KeyNotFoundError
from signpeer_core.identifiers import check_identifier
from signpeer_core.keys import describe_key, next_alias_in_sequence, parse_key_spec, test_key
from signpeer_core.tokens import KeystoreCreator

if TYPE_CHECKING:
    from signpeer_core.administration.base import WorkerRef
    from signpeer_core.tokens import CryptoToken, KeyInfo
    from signpeer_core.workers import Worker

#: Defaults of KEYALG/KEYSPEC when a worker sets neither (spec §2.1).
DEFAULT_KEYALG = "RSA"
DEFAULT_KEYSPEC = "2048"


@dataclass
class KeyTestResult:
    """The outcome of testing one key (sign SignServer's test message and verify)."""

    alias: str
    success: bool
    description: str = ""
    error: str = ""

    def line(self) -> str:
        """As SignServer's ``testkey`` prints it."""
        status = "SUCCESS" if self.success else "FAILURE"
        extra = f" ({self.error})" if self.error else ""
        return f"Key alias: {self.alias}, {self.description}: {status}{extra}"


@dataclass
class NextKey:
    """What :meth:`Keys.next_key` did: the alias in NEXTCERTSIGNKEY and whether it is new."""

    alias: str
    created: bool


def free_alias(start: str, taken: Iterable[str]) -> str:
    """The next alias in sequence after ``start`` that is not ``taken`` (case-insensitive)."""
    taken_l = {a.lower() for a in taken}
    alias = next_alias_in_sequence(start)
    while alias.lower() in taken_l:
        alias = next_alias_in_sequence(alias)
    return alias


def run_key_test(token: CryptoToken, alias: str) -> KeyTestResult:
    """Sign and verify the test message with one key of ``token``."""
    try:
        key = token.private_key(alias)
        description = describe_key(token.public_key(alias))
    except KeyNotFoundError as exc:
        return KeyTestResult(alias, False, "", exc.message)
    except ConfigurationError as exc:  # a key type signpeer does not sign with (DSA): report it, go on
        return KeyTestResult(alias, False, "", exc.message)
    try:
        ok = test_key(key, token.public_key(alias))
    except Exception as exc:  # a broken HSM key must be reported, not crash the listing
        return KeyTestResult(alias, False, description, f"{type(exc).__name__}: {exc}")
    return KeyTestResult(alias, ok, description, "" if ok else "signature did not verify")


class Keys(KeyRetirement):
    """The key operations of :class:`~signpeer_core.admin.WorkerAdmin`."""

    def _keygen(self, config: WorkerConfig, worker: Worker, token: CryptoToken, alias: str | None,
                keyalg: str | None, keyspec: str | None,
                aliases: list[str] | None = None) -> tuple[str, AuditEvent]:
        """Generate in the token; the KEYGEN record is the caller's to write. ``aliases``: the
        token's aliases if the caller has just listed them (listing re-reads the keystore; the
        token checks the alias again under its lock)."""
        if aliases is None:
            aliases = token.key_aliases()
        if alias is None or not alias.strip():
            current = config.get_str("DEFAULTKEY")
            if not current:
                raise BadRequestError(
                    f"worker '{worker.name}' has no DEFAULTKEY to continue the alias sequence from; "
                    "give the alias (-alias <alias>)")
            alias = free_alias(current, aliases)
        alias = check_identifier(alias.strip(), "a key alias")
        keyalg = (keyalg or config.get_str("KEYALG", DEFAULT_KEYALG)).strip()
        keyspec = (keyspec or config.get_str("KEYSPEC", "" if keyalg.upper() in ("ED25519", "EDDSA") else DEFAULT_KEYSPEC)).strip()
        parse_key_spec(keyalg, keyspec)  # a clear error before touching the token
        if alias.lower() in {a.lower() for a in aliases}:
            raise ConflictError(f"the crypto token of '{worker.name}' already has a key '{alias}'; "
                                "choose another alias or remove it with signpeer removekey")
        token.generate_key(alias, keyalg, keyspec)
        return alias, self.event("KEYGEN", KEY_MANAGEMENT, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self.token_name(worker), "KEYALG": keyalg, "KEYSPEC": keyspec})

    def generate_key(
        self, id_or_name: WorkerRef, alias: str | None = None, keyalg: str | None = None,
        keyspec: str | None = None,
    ) -> str:
        """Generate a key pair in the worker's token; returns its alias.

        Left-out alias: the next in sequence after ``DEFAULTKEY`` (``signer00001`` →
        ``signer00002``), skipping aliases already in the token. Left-out algorithm/spec:
        ``KEYALG``/``KEYSPEC`` (default RSA 2048).
        """
        config, worker, token = self.worker_token(id_or_name)
        alias, keygen = self._keygen(config, worker, token, alias, keyalg, keyspec)
        stage(self.store, Change().record(keygen))
        return alias

    def create_keystore(self, id_or_name: WorkerRef, authentication_code: str = "") -> bool:
        """Create the worker's empty key store when it does not exist (only ever when asked) and
        activate the token with it; False when it existed. Audited as KEYSTORECREATE."""
        worker, token = self.token(id_or_name, active=False)
        if not isinstance(token, KeystoreCreator):
            raise BadRequestError(f"the crypto token of worker '{worker.name}' has no key store to create")
        with self.services.runtime.lock:
            created = token.create_keystore(authentication_code)
            if created:
                self.services.runtime.refresh_token_users(self.services.runtime.get(self.token_name(worker)).id)
        if created:
            stage(self.store, Change().record(self.event("KEYSTORECREATE", KEY_MANAGEMENT, worker.id, {
                "CRYPTOTOKEN": self.token_name(worker)})))
        return created

    def _test_event(self, worker: Worker, result: KeyTestResult) -> AuditEvent:
        return self.event("KEYTEST", KEY_MANAGEMENT, worker.id, {
            "KEYALIAS": result.alias, "CRYPTOTOKEN": self.token_name(worker), "TESTRESULTS": result.line()},
            outcome="SUCCESS" if result.success else "FAILURE")

    def next_key(self, id_or_name: WorkerRef, replace: bool = False, publish: bool = False) -> NextKey:
        """A key for renewal in ``NEXTCERTSIGNKEY``; the pending one is returned unless ``replace``.

        The new key is tested before it is recorded (as SignServer's RenewalWorker does). KEYGEN,
        SET_WORKER_CONFIG and KEYTEST are written with NEXTCERTSIGNKEY in one transaction;
        ``publish`` makes the change active in that transaction too (and here at once).

        Calls for one worker are serialized across every process of the installation, every node
        included (:meth:`Database.lock <signpeer_core.storage.database.Database.lock>`: an advisory
        lock on PostgreSQL, a byte-range lock beside an SQLite database): the configuration is read under
        the lock, so a call that comes second finds the key the first one made and returns it
        (``created`` false). A call that still meets the alias taken (made outside signpeer's lock)
        waits briefly for that key to be recorded and returns it too.
        """
        key = str(id_or_name.worker_id if isinstance(id_or_name, WorkerConfig) else id_or_name).strip()
        worker_id = int(key) if key.isascii() and key.isdigit() else self.worker_id(key)  # an id: read under the lock only
        with self.services.store.database.lock(f"worker-{worker_id}"):
            try:
                return self._next_key(worker_id, replace, publish)
            except ConflictError:
                found = None if replace else self._recorded_by_another(worker_id)
                if found is None:
                    raise
                return found

    def _recorded_by_another(self, worker_id: int, wait_s: float = 5.0) -> NextKey | None:
        """The key another machine's call made and is recording, once its NEXTCERTSIGNKEY is in."""
        deadline = time.monotonic() + wait_s
        while True:
            pending = self.resolve(worker_id).get_str("NEXTCERTSIGNKEY")
            if pending:
                return NextKey(pending, False)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _next_key(self, worker_id: int, replace: bool, publish: bool) -> NextKey:
        config, worker, token = self.worker_token(worker_id)
        pending = config.get_str("NEXTCERTSIGNKEY")
        aliases = token.key_aliases()
        if pending and not replace and pending.lower() in {a.lower() for a in aliases}:
            return NextKey(pending, False)
        base = pending or config.get_str("DEFAULTKEY")
        if not base:
            raise BadRequestError(
                f"worker '{worker.name}' has no DEFAULTKEY to continue the alias sequence from; "
                f"set DEFAULTKEY (signpeer setproperty {worker.name} DEFAULTKEY <alias>) first")
        alias, keygen = self._keygen(config, worker, token, free_alias(base, aliases), None, None, aliases)
        result = run_key_test(token, alias)
        test_event = self._test_event(worker, result)
        if not result.success:
            stage(self.store, Change().record(keygen, test_event))
            raise ConfigurationError(f"the new key '{alias}' failed its test ({result.error}); it was not selected")
        change = self.worker_change(config, {"NEXTCERTSIGNKEY": alias}, extra_audit=[test_event])
        change.audit.insert(0, keygen)
        if publish:
            change.record(self.reload_event(worker.id))
        self.apply(change, [worker.id] if publish else None)
        self.retire_after_renewal(config)
        return NextKey(alias, True)

    def generate_next_key(self, id_or_name: WorkerRef, replace: bool = False) -> str:
        """The alias of :meth:`next_key` (staged: active after ``reload``)."""
        return self.next_key(id_or_name, replace).alias

    def test_key(self, id_or_name: WorkerRef, alias: str | None = None) -> list[KeyTestResult]:
        """Sign and verify SignServer's test message with one key (default DEFAULTKEY) or ``all``."""
        config, worker, token = self.worker_token(id_or_name)
        if alias is None or not alias.strip():
            alias = config.get_str("DEFAULTKEY")
            if not alias:
                raise BadRequestError(f"worker '{worker.name}' has no DEFAULTKEY; name the key to test or use all")
        if alias.strip().lower() == "all":
            aliases = token.key_aliases()
        else:
            aliases = [alias.strip()]
        results = [run_key_test(token, a) for a in aliases]
        if results:
            stage(self.store, Change().record(*(self._test_event(worker, r) for r in results)))
        return results

    def key_infos(self, id_or_name: WorkerRef) -> list[KeyInfo]:
        _, token = self.token(id_or_name)
        return token.key_infos()

    def remove_key(self, id_or_name: WorkerRef, alias: str) -> None:
        """Delete a key pair from the worker's token."""
        worker, token = self.token(id_or_name)
        try:
            token.remove_key(alias)
        except KeyNotFoundError as exc:
            raise KeyNotFoundError(
                f"the crypto token of '{worker.name}' has no key '{alias}'; list the keys with "
                f"signpeer testkey {worker.name} all") from exc
        stage(self.store, Change().record(self.event("KEYREMOVE", KEY_MANAGEMENT, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self.token_name(worker), "SUCCESS": "true"})))
