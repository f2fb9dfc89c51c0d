"""Workers seen as key bindings (EJBCA's "Remote Key Bindings", spec §3).

A worker is a key binding when it is ``PROCESSABLE``, has a crypto token (its own through
``CRYPTOTOKEN_IMPLEMENTATION_CLASS`` or a crypto worker's through ``CRYPTOTOKEN``) and
``PEERS_VISIBLE=true``. Its fields:

* ``status``: ``DISABLED`` when ``DISABLED=true``, else ``ACTIVE``;
* ``operationalStatus``: ``OFFLINE`` when the token is not active, the ``DEFAULTKEY`` key is
  missing or the signer certificate is expired or not yet valid (the binding is still listed,
  as SignServer shows it greyed out), else ``ONLINE``;
* ``keyPairAlias`` / ``nextKeyPairAlias``: ``DEFAULTKEY`` / ``NEXTCERTSIGNKEY``;
* ``signatureAlgorithm``: the CSR algorithm by spec §2.2;
* ``certificate``: subject, issuer, serial and validity of the current signer certificate;
* ``certificateId``: the lower-case hex SHA-1 fingerprint of that certificate, only when
  ``PEERS_ISSUED=true`` (otherwise EJBCA would hide a binding whose certificate it does not know).

Everything is computed from the process's in-memory runtime. The parts that depend only on a
loaded worker (its configuration is immutable until the next reload builds a new object) are
cached per worker object, so listing 10,000 bindings costs a dictionary copy and one key check
per binding. The key check is the signing path's own (:meth:`CryptoToken.has_key`: the key a
signature would use, from the token's memory where it keeps its keys), asked once per token
and alias per listing: a soft token with its keystore in the database is not read again for
every binding, so listing (and ``renew-all``, which starts with a listing) costs no statement
per binding.
"""

from __future__ import annotations

import builtins
import json
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from signpeer_core.api import (
    PROCESSABLE,
    NotFoundError,
    SignpeerError,
    csr_signature_algorithm,
    decode_certificate_property,
    describe_key,
    format_dn,
    is_true,
)
from signpeer_peerconnector.protocol import (
    OFFLINE,
    ONLINE,
    PAGE_SIZE,
    PEERS_ISSUED,
    PEERS_VISIBLE,
    STATUS_ACTIVE,
    STATUS_DISABLED,
)

if TYPE_CHECKING:
    from signpeer_core.api import CryptoToken, Runtime, Worker


def is_key_binding(worker: Worker) -> bool:
    """Spec §3.1: PROCESSABLE, a crypto token configured (own or referenced), PEERS_VISIBLE=true."""
    config = worker.config
    if worker.worker_type != PROCESSABLE or not is_true(config.get(PEERS_VISIBLE)):
        return False
    return bool(config.get_str("CRYPTOTOKEN_IMPLEMENTATION_CLASS") or config.get_str("CRYPTOTOKEN"))


def _iso(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_json(cert: x509.Certificate) -> dict[str, Any]:
    """The parts of a certificate a CA needs to decide about renewal."""
    return {
        "subject": format_dn(cert.subject),
        "issuer": format_dn(cert.issuer),
        "serialNumber": format(cert.serial_number, "x"),
        "notBefore": _iso(cert.not_valid_before_utc),
        "notAfter": _iso(cert.not_valid_after_utc),
    }


def fingerprint(cert: x509.Certificate) -> str:
    """EJBCA's certificate id: lower-case hex SHA-1 over the DER certificate."""
    return cert.fingerprint(hashes.SHA1()).hex()


@dataclass
class _Static:
    """What is fixed for one loaded worker object and one signer certificate."""

    leaf: x509.Certificate | None
    body: dict[str, Any]
    alias: str
    algorithm_final: bool
    json_head: str = ""  # the body as JSON without its closing brace, for list_json()
    valid_from: float = 0.0  # the certificate's validity (timestamps), checked per read
    valid_until: float = float("inf")


_ONLINE_TAIL = ',"operationalStatus":"ONLINE","offlineReasons":[]}'


class KeyBindings:
    """Computes key bindings from a runtime, caching the static part per loaded worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache: weakref.WeakKeyDictionary[Worker, _Static] = weakref.WeakKeyDictionary()

    # -- public --------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Every visible binding, by worker id."""
        aliases: dict[tuple[int, str], bool] = {}
        out = []
        for worker in self.runtime.workers():
            if is_key_binding(worker):
                out.append(self._binding(worker, aliases))
        return out

    def list_json(self, after: int | None = None, limit: int = PAGE_SIZE) -> bytes:
        """One page of ``{"keyBindings": [...], "nextCursor": ...}`` encoded, from per-worker
        cached JSON fragments: up to ``limit`` bindings with ids above ``after``, by id.
        ``nextCursor`` (the last id of the page, as text) is there only when more follow.

        The static part of each binding is encoded once per loaded worker, so a page of 1,000
        bindings is mostly a string join; the page is found by bisection over the ids, so the
        last page of 50,000 costs what the first does.
        """
        aliases: dict[tuple[int, str], bool] = {}
        parts = []
        page, more = self.runtime.workers_after(after, limit, is_key_binding)
        for worker in page:
            token = worker.token
            static = self._static(worker, token)
            reasons = self._offline_reasons(worker, token, static, aliases)
            if not static.json_head:
                static.json_head = json.dumps(static.body, ensure_ascii=False, separators=(",", ":"))[:-1]
            if reasons:
                parts.append(static.json_head + ',"operationalStatus":"OFFLINE","offlineReasons":'
                             + json.dumps(reasons, ensure_ascii=False) + "}")
            else:
                parts.append(static.json_head + _ONLINE_TAIL)
        tail = f',"nextCursor":"{page[-1].id}"' if more and page else ""
        return ('{"keyBindings":[' + ",".join(parts) + "]" + tail + "}").encode()

    def worker(self, id_or_name: str | int) -> Worker:
        """The worker behind a binding id or name; 404 unless it is a visible binding."""
        key = str(id_or_name).strip()
        try:
            worker = self.runtime.get(key)
        except SignpeerError:
            worker = None
        if worker is None or not is_key_binding(worker):
            raise NotFoundError(
                f"no key binding '{key}': there is no worker with that id or name, or it is not exposed "
                f"to peers (it must be PROCESSABLE, have a crypto token and PEERS_VISIBLE=true)")
        return worker

    def get(self, id_or_name: str | int) -> dict[str, Any]:
        return self._binding(self.worker(id_or_name), {})

    # -- computation ---------------------------------------------------------------------------
    def _binding(self, worker: Worker, aliases: dict[tuple[int, str], bool]) -> dict[str, Any]:
        token = worker.token
        static = self._static(worker, token)
        body = dict(static.body)
        reasons = self._offline_reasons(worker, token, static, aliases)
        body["operationalStatus"] = OFFLINE if reasons else ONLINE
        body["offlineReasons"] = reasons
        return body

    def _offline_reasons(self, worker: Worker, token: CryptoToken | None, static: _Static,
                         aliases: dict[tuple[int, str], bool]) -> builtins.list[str]:  # list: a method here
        reasons: list[str] = []
        if token is None:
            reasons.append("; ".join(worker.fatal_errors) or "the crypto token could not be loaded")
        elif not token.is_active:
            reasons.append("crypto token not activated")
        elif static.alias:
            key = (id(token), static.alias)
            present = aliases.get(key)
            if present is None:
                present = aliases[key] = self._has_key(token, static.alias)
            if not present:
                reasons.append(f"key '{static.alias}' (DEFAULTKEY) is not in the crypto token")
        else:
            reasons.append("DEFAULTKEY is not set")
        # A certificate that expired (or is not valid yet) cannot sign: say so, as signing would.
        now = time.time()
        if now > static.valid_until:
            reasons.append(f"signer certificate expired on {static.body['certificate']['notAfter']}")
        elif now < static.valid_from:
            reasons.append(f"signer certificate not yet valid (valid from {static.body['certificate']['notBefore']})")
        return reasons

    @staticmethod
    def _has_key(token: CryptoToken, alias: str) -> bool:
        try:
            return token.has_key(alias)
        except SignpeerError:
            return False

    def _static(self, worker: Worker, token: CryptoToken | None) -> _Static:
        chain: list[x509.Certificate] = worker.chain or []
        leaf = chain[0] if chain else None
        cached = self._cache.get(worker)
        if cached is not None and cached.leaf is leaf and (cached.algorithm_final or not (token and token.is_active)):
            return cached
        config = worker.config
        if leaf is None and worker.chain is None:
            configured = _configured_leaf(worker)
            leaf = configured
        alias = config.get_str("DEFAULTKEY")
        signer_cert = leaf
        final = True
        if signer_cert is None and not config.get_str("REQUESTSIGNATUREALGORITHM"):
            # No real certificate yet: SignServer takes the key's placeholder certificate (DSS-3047).
            signer_cert, final = _placeholder(token, alias)
        try:
            algorithm = csr_signature_algorithm(config.get_str("REQUESTSIGNATUREALGORITHM"),
                                                config.get_str("SIGNATUREALGORITHM"), signer_cert)
        except SignpeerError:
            algorithm, final = None, False
        body: dict[str, Any] = {
            "id": worker.id,
            "name": worker.name,
            "status": STATUS_DISABLED if worker.disabled else STATUS_ACTIVE,
            "keyPairAlias": alias or None,
            "nextKeyPairAlias": config.get_str("NEXTCERTSIGNKEY") or None,
            "signatureAlgorithm": algorithm,
            "cryptoToken": worker.token_owner or (worker.name if config.get_str("CRYPTOTOKEN_IMPLEMENTATION_CLASS")
                                                  else config.get_str("CRYPTOTOKEN")),
            "keySpec": describe_key(leaf.public_key()) if leaf is not None else None,
            "certificate": certificate_json(leaf) if leaf is not None else None,
            "certificateId": fingerprint(leaf) if leaf is not None and is_true(config.get(PEERS_ISSUED)) else None,
            "peersIssued": is_true(config.get(PEERS_ISSUED)),
        }
        static = _Static(leaf if worker.chain is not None else (chain[0] if chain else None), body, alias, final)
        if leaf is not None:
            static.valid_from = leaf.not_valid_before_utc.timestamp()
            static.valid_until = leaf.not_valid_after_utc.timestamp()
        self._cache[worker] = static
        return static


def _configured_leaf(worker: Worker) -> x509.Certificate | None:
    try:
        certs = decode_certificate_property(worker.config.get_str("SIGNERCERT")) or \
            decode_certificate_property(worker.config.get_str("SIGNERCERTCHAIN"))
    except SignpeerError:
        return None
    return certs[0] if certs else None


def _placeholder(token: CryptoToken | None, alias: str) -> tuple[x509.Certificate | None, bool]:
    """The token's certificate for ``alias`` (a placeholder for new keys); final when it could be read."""
    if token is None or not alias or not token.is_active:
        return None, False
    try:
        chain = token.certificate_chain(alias)
    except SignpeerError:
        return None, False
    return (chain[0] if chain else None), True
