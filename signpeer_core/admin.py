"""The administration service layer: every configuration and key change, with its audit record.

The ``signpeer`` command line, the peer endpoint (CA-driven renewal) and the Admin Web all
change workers through :class:`WorkerAdmin`, so the rules live in one place:

* Worker configuration is read from the **store** (the source of truth, which may be ahead of
  the loaded runtime until ``reload``); keys are reached through the **runtime**'s crypto
  tokens (a worker's own token, or the one of the crypto worker its ``CRYPTOTOKEN`` names).
* Every change writes its audit events in the same transaction as the change, with
  SignServer's event names (spec §8). Key operations touch the token first (files, HSM) and
  then write their audit record, since a token is not part of the database transaction.
* Certificate installation follows spec §4.4: the leaf must belong to ``NEXTCERTSIGNKEY``
  (which is then promoted to ``DEFAULTKEY``) or ``DEFAULTKEY``; anything else is refused
  and nothing changes.

Errors are :mod:`signpeer_core.errors` classes whose messages say what to do next.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.config import WorkerConfig, global_key, is_true
from signpeer_core.errors import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
    UnknownWorkerError,
)
from signpeer_core.keys import (
    build_csr,
    certificate_pem,
    csr_signature_algorithm,
    describe_key,
    key_kind,
    load_certificates,
    next_alias_in_sequence,
    parse_key_spec,
    public_key_der,
    signature_algorithm,
    test_key,
)
from signpeer_core.signers import decode_certificate_property, encode_certificate_property
from signpeer_core.store import Admin, AuditEvent
from signpeer_core.workers import WorkerStatus

if TYPE_CHECKING:
    from signpeer_core.services import Services
    from signpeer_core.tokens import CryptoToken
    from signpeer_core.workers import Worker

# SignServer's audit modules.
WORKER_CONFIG = "WORKER_CONFIG"
GLOBAL_CONFIG = "GLOBAL_CONFIG"
KEY_MANAGEMENT = "KEY_MANAGEMENT"

#: Defaults of KEYALG/KEYSPEC when a worker sets neither (spec §2.1).
DEFAULT_KEYALG = "RSA"
DEFAULT_KEYSPEC = "2048"

# USER.<name> holds password hashes (AUTHTYPE=USERNAME): not secret as such, but no log needs them.
_SECRET = re.compile(r"PASSWORD|SECRET|AUTHCODE|PIN$|^USER\.")
MASK = "********"


def is_secret_key(key: str) -> bool:
    """Properties whose values never go into the audit log (keystore passwords, PINs)."""
    return bool(_SECRET.search(key.upper()))


def _shown(key: str, value: str) -> str:
    return MASK if is_secret_key(key) else value


def config_diff(old: Mapping[str, str], set_props: Mapping[str, str], remove: Iterable[str]) -> dict[str, str]:
    """SET_WORKER_CONFIG details as SignServer writes them: ``added:K``, ``changed:K``, ``removed:K``."""
    details: dict[str, str] = {}
    for key in remove:
        k = key.upper()
        if k in old and k not in {s.upper() for s in set_props}:
            details[f"removed:{k}"] = _shown(k, old[k])
    for key, value in set_props.items():
        k = key.upper()
        if k not in old:
            details[f"added:{k}"] = _shown(k, value)
        elif old[k] != value:
            details[f"changed:{k}"] = _shown(k, value)
    return details


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
class CsrResult:
    """A generated PKCS#10 request and what it was made from."""

    csr: x509.CertificateSigningRequest
    alias: str
    subject_dn: str
    signature_algorithm: str
    for_default_key: bool

    @property
    def pem(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.csr.public_bytes(serialization.Encoding.DER)


@dataclass
class InstallResult:
    """What :meth:`WorkerAdmin.install_certificate_chain` did."""

    worker_id: int
    alias: str
    promoted: bool
    chain: list[x509.Certificate] = field(default_factory=list)


class WorkerAdmin:
    """Administration of workers, global properties and keys on behalf of one administrator."""

    def __init__(self, services: Services, admin: Admin) -> None:
        self.services = services
        self.store = services.store
        self.admin = admin

    # -- lookups ----------------------------------------------------------------------------
    def worker_id(self, id_or_name: str | int) -> int:
        """The id of an existing worker given by id or (case-insensitive) NAME."""
        key = str(id_or_name).strip()
        # An id needs one worker's rows, not every worker's (peer renewals run per worker by id).
        if key.isdigit() and self.store.worker_properties(int(key)):
            return int(key)
        props = self.store.all_worker_properties()
        for wid, p in props.items():
            if p.get("NAME", "").lower() == key.lower() and key:
                return wid
        raise UnknownWorkerError(f"no worker '{key}'; list them with signpeer getstatus brief all")

    def find_worker_id(self, id_or_name: str | int) -> int | None:
        try:
            return self.worker_id(id_or_name)
        except UnknownWorkerError:
            return None

    def worker_config(self, id_or_name: str | int) -> WorkerConfig:
        """The stored (not necessarily reloaded) configuration of a worker."""
        wid = self.worker_id(id_or_name)
        return WorkerConfig(wid, self.store.worker_properties(wid))

    def global_config(self) -> dict[str, str]:
        return self.store.global_properties()

    def worker_ids(self) -> list[int]:
        return self.store.worker_ids()

    def loaded_worker(self, id_or_name: str | int) -> Worker:
        """The runtime worker (for tokens and status), loading the runtime if it lags behind."""
        wid = self.worker_id(id_or_name)
        runtime = self.services.runtime
        worker = runtime.by_id.get(wid)
        if worker is None:
            # Created since this process loaded: load locally (this does not signal other processes).
            runtime.load()
            worker = runtime.by_id.get(wid)
        if worker is None:  # pragma: no cover - removed concurrently
            raise UnknownWorkerError(f"worker {wid} disappeared while loading; try again")
        return worker

    def statuses(self, id_or_name: str | int = "all") -> list[WorkerStatus]:
        """ACTIVE/OFFLINE with reasons, for one worker or all."""
        if str(id_or_name).lower() == "all":
            runtime = self.services.runtime
            if set(runtime.by_id) != set(self.store.worker_ids()):
                runtime.load()
            return [w.status() for w in runtime.workers()]
        return [self.loaded_worker(id_or_name).status()]

    # -- worker properties ------------------------------------------------------------------
    def _check_name(self, wid: int, name: str) -> None:
        if not name.strip():
            raise BadRequestError("NAME must not be empty")
        if name.strip().isdigit():
            raise BadRequestError(f"NAME '{name}' is a number; names must not be numeric (they would read as ids)")
        for other, props in self.store.all_worker_properties().items():
            if other != wid and props.get("NAME", "").lower() == name.strip().lower():
                raise ConflictError(f"worker {other} is already named '{props['NAME']}'; choose another NAME")

    def update_worker(
        self, id_or_name: str | int, set_props: Mapping[str, str] | None = None, remove: Iterable[str] = (),
        create: bool = False, extra_audit: list[AuditEvent] | None = None,
    ) -> int:
        """Set and remove several properties of one worker in one transaction (one SET_WORKER_CONFIG).

        ``create``: a numeric id that does not exist yet becomes a new worker (SignServer's
        ``setproperty 7 NAME MySigner``).
        """
        key = str(id_or_name).strip()
        wid = self.find_worker_id(key)
        if wid is None:
            if not (create and key.isdigit() and int(key) > 0):
                raise UnknownWorkerError(f"no worker '{key}'; list them with signpeer getstatus brief all")
            wid = int(key)
        sets = {k.strip().upper(): str(v) for k, v in (set_props or {}).items()}
        removes = [k.strip().upper() for k in remove]
        for k in list(sets) + removes:
            if not k:
                raise BadRequestError("a property key must not be empty")
        if "NAME" in sets:
            self._check_name(wid, sets["NAME"])
        old = self.store.worker_properties(wid)
        details = config_diff(old, sets, removes)
        audit = list(extra_audit or [])
        if details:
            audit.insert(0, AuditEvent("SET_WORKER_CONFIG", WORKER_CONFIG, self.admin, wid, details))
        self.store.update_worker(wid, sets, removes, audit=audit)
        return wid

    def set_property(self, id_or_name: str | int, key: str, value: str) -> int:
        """Set one worker property (a numeric id that does not exist creates the worker)."""
        return self.update_worker(id_or_name, {key: value}, create=True)

    def remove_property(self, id_or_name: str | int, key: str) -> bool:
        """Remove one worker property; False when it was not set."""
        wid = self.worker_id(id_or_name)
        if key.strip().upper() not in self.store.worker_properties(wid):
            return False
        self.update_worker(wid, remove=[key])
        return True

    def create_worker(self, properties: Mapping[str, str], worker_id: int | None = None) -> int:
        """A new worker with ``properties`` (NAME required); returns its id."""
        props = {k.strip().upper(): str(v) for k, v in properties.items()}
        if "NAME" not in props:
            raise BadRequestError("a new worker needs a NAME")
        wid = worker_id or self.store.next_worker_id()
        if wid in self.store.all_worker_properties():
            raise ConflictError(f"worker id {wid} is already taken")
        self._check_name(wid, props["NAME"])
        self.store.update_worker(wid, props, audit=[AuditEvent(
            "SET_WORKER_CONFIG", WORKER_CONFIG, self.admin, wid, config_diff({}, props, ()))])
        return wid

    def ensure_worker(self, name: str, properties: Mapping[str, str]) -> int:
        """The worker named ``name``, created with ``properties`` when it does not exist."""
        wid = self.find_worker_id(name)
        if wid is not None and not name.strip().isdigit():
            return wid
        return self.create_worker({**properties, "NAME": name})

    def remove_worker(self, id_or_name: str | int) -> int:
        """Delete a worker's configuration (its keys stay in the token)."""
        wid = self.worker_id(id_or_name)
        old = self.store.worker_properties(wid)
        self.store.remove_worker(wid, audit=[AuditEvent(
            "SET_WORKER_CONFIG", WORKER_CONFIG, self.admin, wid, config_diff(old, {}, list(old)))])
        return wid

    # -- global properties ------------------------------------------------------------------
    def _global_key(self, scope: str, key: str) -> str:
        if not key.strip():
            raise BadRequestError("a property key must not be empty")
        return global_key(scope, key, self.services.settings.node_id)

    def set_global(self, scope: str, key: str, value: str) -> str:
        """Set a global property (scope ``global``/``GLOB`` or ``node``/``NODE``); returns the stored key."""
        full = self._global_key(scope, key)
        self.store.update_global({full: value}, audit=[AuditEvent(
            "SET_GLOBAL_PROPERTY", GLOBAL_CONFIG, self.admin, None,
            {"GLOBALCONFIG_PROPERTY": full, "GLOBALCONFIG_VALUE": _shown(full, value)})])
        return full

    def remove_global(self, scope: str, key: str) -> bool:
        """Remove a global property; False when it was not set."""
        full = self._global_key(scope, key)
        if full not in self.store.global_properties():
            return False
        self.store.update_global(remove=[full], audit=[AuditEvent(
            "REMOVE_GLOBAL_PROPERTY", GLOBAL_CONFIG, self.admin, None, {"GLOBALCONFIG_PROPERTY": full})])
        return True

    def get_global(self, scope: str, key: str) -> str | None:
        return self.store.global_properties().get(self._global_key(scope, key))

    # -- reload -----------------------------------------------------------------------------
    def reload(self, id_or_name: str | int = "all") -> int:
        """Make stored changes active in every process of the node; returns the new generation.

        The generation is global (every server process reloads all workers when it changes);
        naming a worker only checks that it exists and records it in the audit log.
        """
        wid = None if str(id_or_name).lower() == "all" else self.worker_id(id_or_name)
        generation = self.store.bump_config_generation()
        self.store.audit(AuditEvent("RELOAD_WORKER_CONFIG", WORKER_CONFIG, self.admin, wid,
                                    {"CONFIG_GENERATION": str(generation)}))
        runtime = self.services.runtime
        if wid is not None and runtime.generation >= 0:
            # This process rebuilds just that worker (others keep their activated tokens).
            runtime.reload_workers([wid], generation)
        else:
            runtime.load()
        return generation

    # -- tokens -----------------------------------------------------------------------------
    def token(self, id_or_name: str | int, active: bool = True) -> tuple[Worker, CryptoToken]:
        """The worker and the crypto token it uses; with ``active``, an offline token is an error."""
        worker = self.loaded_worker(id_or_name)
        token = worker.token
        if token is None:
            problems = "; ".join(worker.fatal_errors)
            raise ConfigurationError(
                f"worker '{worker.name}' has no usable crypto token" + (f" ({problems})" if problems else "")
                + "; set CRYPTOTOKEN=<crypto worker name> or CRYPTOTOKEN_IMPLEMENTATION_CLASS, then "
                f"signpeer reload {worker.name}")
        if active and not token.is_active:
            owner = worker.token_owner or worker.name
            via = "" if owner == worker.name else f" (the token of crypto worker '{owner}')"
            raise CryptoTokenOfflineError(
                f"the crypto token of worker '{worker.name}'{via} is not activated; run "
                f"signpeer activatecryptotoken {owner} (or configure its password for auto-activation)")
        return worker, token

    def _token_name(self, worker: Worker) -> str:
        return worker.token_owner or worker.name

    def activate(self, id_or_name: str | int, authentication_code: str) -> None:
        """Activate the token in this process and, in a running server, in its other processes."""
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        with self.services.runtime.lock, relay.lock:
            token.activate(authentication_code)
            owner = self._owner(worker)
            self.services.runtime.refresh_token_users(owner.id)
            relay.publish(owner, authentication_code)

    def deactivate(self, id_or_name: str | int) -> None:
        worker, token = self.token(id_or_name, active=False)
        relay = self.services.activation
        with self.services.runtime.lock, relay.lock:
            token.deactivate()
            relay.publish(self._owner(worker), None)

    def _owner(self, worker: Worker) -> Worker:
        """The worker that holds ``worker``'s token (itself, or the one its CRYPTOTOKEN names)."""
        return self.services.runtime.get(self._token_name(worker))

    # -- keys -------------------------------------------------------------------------------
    def _free_alias(self, start: str, taken: Iterable[str]) -> str:
        taken_l = {a.lower() for a in taken}
        alias = next_alias_in_sequence(start)
        while alias.lower() in taken_l:
            alias = next_alias_in_sequence(alias)
        return alias

    def generate_key(
        self, id_or_name: str | int, alias: str | None = None, keyalg: str | None = None,
        keyspec: str | None = None,
    ) -> str:
        """Generate a key pair in the worker's token; returns its alias.

        Left-out alias: the next in sequence after ``DEFAULTKEY`` (``signer00001`` →
        ``signer00002``), skipping aliases already in the token. Left-out algorithm/spec:
        ``KEYALG``/``KEYSPEC`` (default RSA 2048).
        """
        config = self.worker_config(id_or_name)
        worker, token = self.token(config.worker_id)
        if alias is None or not alias.strip():
            current = config.get_str("DEFAULTKEY")
            if not current:
                raise BadRequestError(
                    f"worker '{worker.name}' has no DEFAULTKEY to continue the alias sequence from; "
                    "give the alias (-alias <alias>)")
            alias = self._free_alias(current, token.key_aliases())
        alias = alias.strip()
        keyalg = (keyalg or config.get_str("KEYALG", DEFAULT_KEYALG)).strip()
        keyspec = (keyspec or config.get_str("KEYSPEC", "" if keyalg.upper() in ("ED25519", "EDDSA") else DEFAULT_KEYSPEC)).strip()
        parse_key_spec(keyalg, keyspec)  # a clear error before touching the token
        if alias.lower() in {a.lower() for a in token.key_aliases()}:
            raise ConflictError(f"the crypto token of '{worker.name}' already has a key '{alias}'; "
                                "choose another alias or remove it with signpeer removekey")
        token.generate_key(alias, keyalg, keyspec)
        self.store.audit(AuditEvent("KEYGEN", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self._token_name(worker), "KEYALG": keyalg, "KEYSPEC": keyspec}))
        return alias

    def generate_next_key(self, id_or_name: str | int, replace: bool = False) -> str:
        """A key for renewal in ``NEXTCERTSIGNKEY``; the pending one is returned unless ``replace``.

        The new key is tested before it is recorded (as SignServer's RenewalWorker does).
        """
        config = self.worker_config(id_or_name)
        worker, token = self.token(config.worker_id)
        pending = config.get_str("NEXTCERTSIGNKEY")
        aliases = token.key_aliases()
        if pending and not replace and pending.lower() in {a.lower() for a in aliases}:
            return pending
        base = pending or config.get_str("DEFAULTKEY")
        if not base:
            raise BadRequestError(
                f"worker '{worker.name}' has no DEFAULTKEY to continue the alias sequence from; "
                f"set DEFAULTKEY (signpeer setproperty {worker.name} DEFAULTKEY <alias>) first")
        alias = self._free_alias(base, aliases)
        self.generate_key(worker.id, alias)
        result = self._test_one(token, alias)
        test_event = AuditEvent("KEYTEST", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self._token_name(worker), "TESTRESULTS": result.line()},
            outcome="SUCCESS" if result.success else "FAILURE")
        if not result.success:
            self.store.audit(test_event)
            raise ConfigurationError(f"the new key '{alias}' failed its test ({result.error}); it was not selected")
        self.update_worker(worker.id, {"NEXTCERTSIGNKEY": alias}, extra_audit=[test_event])
        return alias

    def _test_one(self, token: CryptoToken, alias: str) -> KeyTestResult:
        try:
            key = token.private_key(alias)
            description = describe_key(token.public_key(alias))
        except KeyNotFoundError as exc:
            return KeyTestResult(alias, False, "", exc.message)
        try:
            ok = test_key(key, token.public_key(alias))
        except Exception as exc:  # a broken HSM key must be reported, not crash the listing
            return KeyTestResult(alias, False, description, f"{type(exc).__name__}: {exc}")
        return KeyTestResult(alias, ok, description, "" if ok else "signature did not verify")

    def test_key(self, id_or_name: str | int, alias: str | None = None) -> list[KeyTestResult]:
        """Sign and verify SignServer's test message with one key (default DEFAULTKEY) or ``all``."""
        config = self.worker_config(id_or_name)
        worker, token = self.token(config.worker_id)
        if alias is None or not alias.strip():
            alias = config.get_str("DEFAULTKEY")
            if not alias:
                raise BadRequestError(f"worker '{worker.name}' has no DEFAULTKEY; name the key to test or use all")
        if alias.strip().lower() == "all":
            aliases = token.key_aliases()
        else:
            aliases = [alias.strip()]
        results = [self._test_one(token, a) for a in aliases]
        events = [AuditEvent("KEYTEST", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": r.alias, "CRYPTOTOKEN": self._token_name(worker), "TESTRESULTS": r.line()},
            outcome="SUCCESS" if r.success else "FAILURE") for r in results]
        if events:
            self.store.update_worker(worker.id, audit=events)
        return results

    def key_infos(self, id_or_name: str | int):  # type: ignore[no-untyped-def]
        _, token = self.token(id_or_name)
        return token.key_infos()

    def remove_key(self, id_or_name: str | int, alias: str) -> None:
        """Delete a key pair from the worker's token."""
        worker, token = self.token(id_or_name)
        try:
            token.remove_key(alias)
        except KeyNotFoundError as exc:
            raise KeyNotFoundError(
                f"the crypto token of '{worker.name}' has no key '{alias}'; list the keys with "
                f"signpeer testkey {worker.name} all") from exc
        self.store.audit(AuditEvent("KEYREMOVE", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self._token_name(worker), "SUCCESS": "true"}))

    def _public_key(self, worker: Worker, token: CryptoToken, alias: str, role: str):  # type: ignore[no-untyped-def]
        try:
            return token.public_key(alias)
        except KeyNotFoundError:
            raise KeyNotFoundError(
                f"worker '{worker.name}' has no key '{alias}' ({role}); generate it with "
                f"signpeer generatekey {worker.name} -alias {alias}") from None

    def _current_chain(self, config: WorkerConfig) -> list[x509.Certificate]:
        chain = decode_certificate_property(config.get_str("SIGNERCERTCHAIN"))
        leaf = decode_certificate_property(config.get_str("SIGNERCERT"))
        if leaf:
            chain = leaf[:1] + [c for c in chain if c != leaf[0]]
        return chain

    def generate_csr(
        self, id_or_name: str | int, dn: str | None = None, sig_alg: str | None = None,
        alias: str | None = None, next_key: bool = False, explicit_ecc: bool = False,
    ) -> CsrResult:
        """A PKCS#10 request for DEFAULTKEY, NEXTCERTSIGNKEY (``next_key``) or ``alias``.

        Subject: ``dn``, else ``REQUESTDN``, else ``CN=<alias>``. Algorithm: ``sig_alg``, else
        SignServer's rule (spec §2.2) over REQUESTSIGNATUREALGORITHM, SIGNATUREALGORITHM and the
        key's current certificate (the configured one when it matches, else the token's
        placeholder).
        """
        config = self.worker_config(id_or_name)
        worker, token = self.token(config.worker_id)
        if next_key and alias:
            raise BadRequestError("give either an alias or the next key, not both")
        if next_key:
            alias = config.get_str("NEXTCERTSIGNKEY")
            if not alias:
                raise BadRequestError(
                    f"worker '{worker.name}' has no NEXTCERTSIGNKEY; generate a key and set it "
                    f"(signpeer generatekey {worker.name}, then signpeer setproperty {worker.name} "
                    "NEXTCERTSIGNKEY <alias>)")
            role = "NEXTCERTSIGNKEY"
        elif alias:
            role = "alias"
        else:
            alias = config.get_str("DEFAULTKEY")
            if not alias:
                raise BadRequestError(f"worker '{worker.name}' has no DEFAULTKEY; give -alias <alias>")
            role = "DEFAULTKEY"
        alias = alias.strip()
        public = self._public_key(worker, token, alias, role)
        if explicit_ecc and key_kind(public) == "EC":
            raise BadRequestError("-explicitecc (explicit EC parameters in the CSR) is not supported; "
                                  "leave it out to use the named curve")
        subject = (dn or "").strip() or config.get_str("REQUESTDN") or f"CN={alias}"
        if sig_alg and sig_alg.strip():
            algorithm = signature_algorithm(sig_alg).name
        else:
            pub_der = public_key_der(public)
            cert = next((c for c in self._current_chain(config)[:1] if public_key_der(c) == pub_der), None)
            if cert is None:
                chain = token.certificate_chain(alias)
                cert = chain[0] if chain else None
            algorithm = csr_signature_algorithm(config.get_str("REQUESTSIGNATUREALGORITHM"),
                                                config.get_str("SIGNATUREALGORITHM"), cert)
            if cert is None and not config.get_str("REQUESTSIGNATUREALGORITHM") and \
                    signature_algorithm(algorithm).kind != key_kind(public):
                # No certificate to derive from: apply the rule's certificate branch to the key itself.
                kind = key_kind(public)
                algorithm = "Ed25519" if kind == "Ed25519" else "SHA512with" + ("ECDSA" if kind == "EC" else kind)
        csr = build_csr(token.private_key(alias), subject, algorithm)
        result = CsrResult(csr, alias, subject, algorithm, alias == config.get_str("DEFAULTKEY"))
        self.store.audit(AuditEvent("GENCSR", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": alias, "FOR_DEFAULTKEY": str(result.for_default_key).lower(),
            "CRYPTOTOKEN": self._token_name(worker), "CSR": base64.b64encode(result.der).decode()}))
        return result

    # -- certificates -----------------------------------------------------------------------
    @staticmethod
    def _as_chain(chain: list[x509.Certificate] | bytes | str) -> list[x509.Certificate]:
        if isinstance(chain, str):
            chain = chain.encode()
        if isinstance(chain, bytes):
            return load_certificates(chain)
        if not chain:
            raise BadRequestError("no certificate given")
        return list(chain)

    def install_certificate_chain(
        self, id_or_name: str | int, chain: list[x509.Certificate] | bytes | str, keep_chain: bool = False,
        scope: str = "GLOBAL", extra_properties: Mapping[str, str] | None = None, reload: bool = False,
    ) -> InstallResult:
        """Install a signer certificate (leaf first, then its issuers) in the worker configuration.

        The leaf's public key must be the key of ``NEXTCERTSIGNKEY`` (which then becomes
        ``DEFAULTKEY``) or of ``DEFAULTKEY``; otherwise :class:`ConflictError` and nothing
        changes. A lone leaf replaces the chain, unless ``keep_chain`` or ``PEERS_KEEPCHAIN=true``
        keeps the CA part of the existing chain. ``extra_properties`` (e.g. ``PEERS_ISSUED``) are
        written in the same transaction; ``reload`` makes the change active right away.
        """
        certs = self._as_chain(chain)
        # Worker properties have one scope in signpeer: a NODE upload is stored (and so audited)
        # as GLOBAL; the audit record keeps what was asked for.
        scope_u = "GLOBAL"
        asked = "NODE" if scope.strip().upper() in ("NODE", "NODE.") else "GLOBAL"
        config = self.worker_config(id_or_name)
        worker, token = self.token(config.worker_id)
        leaf = certs[0]
        leaf_key = public_key_der(leaf)
        next_alias = config.get_str("NEXTCERTSIGNKEY")
        default_alias = config.get_str("DEFAULTKEY")
        matched: str | None = None
        promoted = False
        tried = []
        for alias, is_next in ((next_alias, True), (default_alias, False)):
            if not alias:
                continue
            tried.append(f"{'NEXTCERTSIGNKEY' if is_next else 'DEFAULTKEY'} '{alias}'")
            try:
                if public_key_der(token.public_key(alias)) == leaf_key:
                    matched, promoted = alias, is_next and alias != default_alias
                    break
            except KeyNotFoundError:
                continue
        if matched is None:
            if not tried:
                raise ConflictError(f"worker '{worker.name}' has neither DEFAULTKEY nor NEXTCERTSIGNKEY; "
                                    "set DEFAULTKEY to the key the certificate was issued for")
            raise ConflictError(
                f"the certificate '{leaf.subject.rfc4514_string()}' does not match the current or next key of "
                f"worker '{worker.name}' ({', '.join(tried)}); nothing was changed. Install the certificate "
                "issued for one of these keys (make a CSR with signpeer generatecertreq)")
        keep = keep_chain or is_true(config.get("PEERS_KEEPCHAIN"))
        if len(certs) == 1 and keep:
            certs = [leaf] + self._current_chain(config)[1:]
        sets = {"SIGNERCERT": encode_certificate_property([leaf]),
                "SIGNERCERTCHAIN": encode_certificate_property(certs)}
        sets.update({k.upper(): str(v) for k, v in (extra_properties or {}).items()})
        removes: list[str] = []
        token_name = self._token_name(worker)
        events = [
            AuditEvent("CERTINSTALLED", WORKER_CONFIG, self.admin, worker.id, {
                "CERTIFICATE": certificate_pem([leaf]), "SCOPE": scope_u, "REQUESTED_SCOPE": asked,
                "NODE": self.services.settings.node_id}),
            AuditEvent("CERTCHAININSTALLED", WORKER_CONFIG, self.admin, worker.id, {
                "CERTIFICATECHAIN": certificate_pem(certs), "SCOPE": scope_u,
                "NODE": self.services.settings.node_id}),
        ]
        if promoted:
            sets["DEFAULTKEY"] = matched
            removes.append("NEXTCERTSIGNKEY")
            events.append(AuditEvent("KEYSELECTED", WORKER_CONFIG, self.admin, worker.id, {
                "KEYALIAS": matched, "CRYPTOTOKEN": token_name, "SCOPE": scope_u}))
        elif next_alias and next_alias == matched:
            removes.append("NEXTCERTSIGNKEY")  # NEXTCERTSIGNKEY == DEFAULTKEY: nothing pending any more
        self.update_worker(worker.id, sets, removes, extra_audit=events)
        if reload:
            self.reload(worker.id)
        return InstallResult(worker.id, matched, promoted, certs)

    def upload_signer_certificate(
        self, id_or_name: str | int, certificate: x509.Certificate | bytes | str, scope: str = "GLOBAL",
    ) -> InstallResult:
        """``uploadsignercertificate``: a new leaf, keeping the CA part of the existing chain."""
        certs = self._as_chain(certificate if not isinstance(certificate, x509.Certificate) else [certificate])
        if len(certs) != 1:
            raise BadRequestError(f"expected one certificate, the file has {len(certs)}; "
                                  "use uploadsignercertificatechain for a chain")
        return self.install_certificate_chain(id_or_name, certs, keep_chain=True, scope=scope)

    def import_certificate_chain(
        self, id_or_name: str | int, chain: list[x509.Certificate] | bytes | str, alias: str,
        authentication_code: str | None = None,
    ) -> None:
        """Store a chain in the token next to key ``alias`` (``importcertificatechain``)."""
        certs = self._as_chain(chain)
        worker, token = self.token(id_or_name, active=False)
        if not token.is_active:
            if not authentication_code:
                self.token(id_or_name)  # raises the "not activated" error
            token.activate(authentication_code or "")
        public = self._public_key(worker, token, alias, "alias")
        if public_key_der(public) != public_key_der(certs[0]):
            raise ConflictError(f"the first certificate of the chain is not for key '{alias}'; nothing was "
                                "imported. Put the certificate issued for that key first")
        try:
            token.import_certificate_chain(alias, certs)
        except NotImplementedError as exc:
            raise BadRequestError(f"{exc}; install the chain in the worker configuration with "
                                  f"signpeer uploadsignercertificatechain {worker.name} GLOB <file>") from None
        self.store.audit(AuditEvent("CERTCHAININSTALLED", KEY_MANAGEMENT, self.admin, worker.id, {
            "KEYALIAS": alias, "CRYPTOTOKEN": self._token_name(worker),
            "CERTIFICATECHAIN": certificate_pem(certs)}))
