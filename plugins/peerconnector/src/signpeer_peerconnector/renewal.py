"""CA-driven renewal of a key binding (spec §4): next key, CSR, certificate install, status.

Every change goes through :class:`signpeer_core.admin.WorkerAdmin` with the peer's certificate
identity as the administrator, so the audit log records who asked (KEYGEN, KEYTEST,
SET_WORKER_CONFIG, GENCSR, CERTINSTALLED, CERTCHAININSTALLED, KEYSELECTED, RELOAD_WORKER_CONFIG).

Each change is published (:func:`signpeer_core.administration.publish`): the properties, all
of its audit records and the configuration generation bump are one transaction, after which this
process rebuilds just that worker (:meth:`Runtime.reload_workers`) and every other server
process reloads within its poll interval. Signing requests already running finish on the old
worker object; new ones get the new key and certificate — none fails in between. The worker is
resolved once per operation: a ``nextkey`` reads one worker's properties and writes one
transaction; as only NEXTCERTSIGNKEY changed, this process puts a copy of the loaded worker with
the new configuration in its place instead of building it again (``UNBUILT_PROPERTIES`` in
:mod:`signpeer_core.runtime`; see ``tests/test_renewal_statements.py``).

Operations on one binding are serialized within a process, so two concurrent "next key"
calls cannot create two keys.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signpeer_core.api import AuthorizationError, BadRequestError, WorkerAdmin
from signpeer_peerconnector.metrics import renewal_done
from signpeer_peerconnector.protocol import PEERS_ISSUED, STATUS_ACTIVE, STATUS_DISABLED

if TYPE_CHECKING:
    from signpeer_core.api import Services
    from signpeer_peerconnector.authz import PeerIdentity


@dataclass
class CsrAnswer:
    pem: str
    alias: str
    subject_dn: str
    signature_algorithm: str
    for_next_key: bool


#: The worker property recording who disabled a worker (the core writes ``ADMIN:<name>``).
DISABLED_BY = "DISABLED_BY"
PEER_DISABLED_PREFIX = "PEER:"


class Renewal:
    """The renewal operations of one server process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)
        #: Other processes may publish behind this one's back: ``serve --workers N``, or any
        #: PostgreSQL database (the nodes of a cluster share it); one SQLite process may not.
        self.shared = services.settings.workers > 1 or services.store.database.dialect != "sqlite"

    def _admin(self, identity: PeerIdentity) -> WorkerAdmin:
        admin = WorkerAdmin(self.services, identity.as_admin())
        if self.shared:
            # The previous step of this renewal may have run in another process of the server
            # (each kept-alive connection is one process's) or on another node of the cluster
            # (behind a load balancer): load what it published first, or this process's token
            # would not have the next key yet.
            admin.catch_up()
        return admin

    def catch_up(self, identity: PeerIdentity) -> None:
        """Load what other processes published, before a read of the key bindings: a listing
        right after a renew-all whose last installs ran in another process shows them (that
        process's notification is followed a moment later: ``membership.STEP_SPACING``). One
        read of the configuration generation when nothing is behind."""
        if self.shared:
            WorkerAdmin(self.services, identity.as_admin()).catch_up()

    def next_key(self, worker_id: int, identity: PeerIdentity, replace: bool = False) -> dict[str, Any]:
        """Generate the next key (KEYALG/KEYSPEC) into NEXTCERTSIGNKEY, or return the pending one."""
        with self._locks[worker_id]:
            result = self._admin(identity).next_key(worker_id, replace=replace, publish=True)
            token = self.services.runtime.get(worker_id).token
            assert token is not None  # next_key found it
            public = token.public_key(result.alias).public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"nextKeyPairAlias": result.alias, "created": result.created, "publicKey": public.decode()}

    def csr(self, worker_id: int, identity: PeerIdentity) -> CsrAnswer:
        """A CSR for NEXTCERTSIGNKEY when there is one, else for DEFAULTKEY (REQUESTDN, spec §2.2)."""
        with self._locks[worker_id]:
            result = self._admin(identity).generate_csr(worker_id, next_key=None)
        return CsrAnswer(result.pem.decode(), result.alias, result.subject_dn, result.signature_algorithm,
                         result.for_next_key)

    def install(self, worker_id: int, identity: PeerIdentity, chain: list[x509.Certificate]) -> dict[str, Any]:
        """Install a chain (leaf first) for the next or current key; PEERS_ISSUED=true; active at once."""
        if not chain:
            raise BadRequestError("no certificate given: send the chain, leaf first, as PEM")
        with self._locks[worker_id]:
            name = self.services.runtime.get(worker_id).name
            try:
                result = self._admin(identity).install_certificate_chain(
                    worker_id, chain, extra_properties={PEERS_ISSUED: "true"}, reload=True)
            except Exception:
                renewal_done(name, success=False)
                raise
            renewal_done(name, success=True)
        return {"keyPairAlias": result.alias, "promoted": result.promoted, "chainLength": len(result.chain)}

    def set_status(self, worker_id: int, identity: PeerIdentity, status: object) -> None:
        """ACTIVE removes ``DISABLED``; DISABLED sets ``DISABLED=true`` (spec §14.9 resolved this way)
        and records the peer in ``DISABLED_BY`` (``PEER:<subject>``). A peer may re-enable only a
        worker a peer disabled: an administrator's ``DISABLED=true`` is refused with 403."""
        wanted = status.strip().upper() if isinstance(status, str) else ""
        if wanted not in (STATUS_ACTIVE, STATUS_DISABLED):
            raise BadRequestError(f"status must be {STATUS_ACTIVE} or {STATUS_DISABLED}, not {status!r}")
        with self._locks[worker_id]:
            admin = self._admin(identity)
            reload = [admin.reload_event(worker_id)]
            if wanted == STATUS_DISABLED:
                admin.update_worker(worker_id, {"DISABLED": "true", DISABLED_BY: PEER_DISABLED_PREFIX + identity.subject},
                                    extra_audit=reload, publish=True)
                return
            config = admin.resolve(worker_id)
            if config.get_bool("DISABLED") and not config.get_str(DISABLED_BY).startswith(PEER_DISABLED_PREFIX):
                # An administrator's DISABLED=true (or one whose origin is not recorded) is theirs to undo.
                by = config.get_str(DISABLED_BY).removeprefix("ADMIN:") or "an administrator"
                raise AuthorizationError(
                    f"worker '{config.name}' was disabled by {by}, not by a peer system; a peer may re-enable "
                    f"only a worker a peer disabled (an administrator removes DISABLED)")
            admin.update_worker(worker_id, remove=["DISABLED"], extra_audit=reload, publish=True)
