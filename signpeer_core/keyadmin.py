"""Key operations in a running server's crypto tokens, over the admin API (administrators only).

A token whose PIN or password is never stored is activated in the server's memory only
(``signpeer activatecryptotoken`` → ``POST …/activate``); the CLI process never holds that
activation. So, as SignServer's AdminCLI asks its server, ``signpeer generatekey``,
``generatecertreq`` and ``testkey`` send the operation here when their own token is not active
and a server runs:

* ``POST /signserver/rest/v1/workers/{idOrName}/keys`` — ``{"alias", "keyAlg", "keySpec"}`` (each
  optional, as ``generatekey``) → ``{"alias", "pid"}``.
* ``POST /signserver/rest/v1/workers/{idOrName}/keys/test`` — ``{"alias"}`` (a key, ``all``, or
  left out for DEFAULTKEY) → ``{"results": [{"alias", "success", "description", "error", "line",
  "certificate"}], "pid"}``.
* ``POST /signserver/rest/v1/workers/{idOrName}/keys/entries`` — ``{}`` → ``{"entries": [{"alias",
  "type", "description", "chain": [{"subject", "issuer"}]}], "pid"}`` (``querytokenentries``).
* ``POST /signserver/rest/v1/workers/{idOrName}/certreq`` — ``{"subjectDN",
  "signatureAlgorithm", "alias" | "nextKey", "explicitEcc"}`` → ``{"pem", "alias", "pid"}``.

Same checks as activation: a TLS client certificate of an administrator (``WSADMINS``) and
``X-Keyfactor-Requested-With``. Every call first applies the activations other processes of the
server published (:meth:`~signpeer_core.activation.ActivationRelay.apply`), so whichever process
of ``serve --workers N`` takes the call holds the token as activated. Keys are stored in the token
(PKCS#11 token objects, the keystore file or database row), where the other processes find them
(a PKCS#11 token searches the device for a key it has not seen; a soft token re-reads a keystore
that changed). The operations are audited under the administrator's certificate.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from signpeer_core.errors import BadRequestError, SignpeerError
from signpeer_core.httpserver import json_body
from signpeer_core.identifiers import check_encodable
from signpeer_core.names import format_dn

if TYPE_CHECKING:
    from signpeer_core.rest import RestAPI
    from signpeer_core.tokens import CryptoToken


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequestError(f'"{key}" must be a string')
    return check_encodable(value, f'"{key}"')


def _required_str(data: dict[str, Any], key: str) -> str:
    value = _optional_str(data, key)
    if not value or not value.strip():
        raise BadRequestError(f'send "{key}" (a non-empty string)')
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BadRequestError(f'"{key}" must be true or false')
    return value


def token_entries(token: CryptoToken) -> list[dict[str, Any]]:
    """Every key entry of ``token`` (sorted by alias) as ``querytokenentries`` shows it."""
    from signpeer_core.keys import describe_key

    out = []
    for alias in sorted(token.key_aliases()):
        try:
            description = describe_key(token.public_key(alias))
        except SignpeerError as exc:  # a key signpeer does not sign with (DSA): listed with the reason
            description = exc.message
        chain = [{"subject": format_dn(c.subject), "issuer": format_dn(c.issuer)}
                 for c in token.certificate_chain(alias)]
        out.append({"alias": alias, "type": "PRIVATEKEY_ENTRY", "description": description, "chain": chain})
    return out


class KeyAdminAPI:
    """The three key operations; authorization comes from the :class:`RestAPI` they sit beside."""

    def __init__(self, rest: RestAPI) -> None:
        self.rest = rest
        self.services = rest.services

    async def _admin(self, request: Request) -> tuple[Any, str, dict[str, Any]]:
        from signpeer_core.rest import _require_requested_with

        _require_requested_with(request)
        cert = self.rest._require_admin(request)
        data = await json_body(request, empty={})
        # This process follows every activation published so far before touching the token.
        await anyio.to_thread.run_sync(self.services.activation.apply)
        return self.rest._worker_admin(cert), request.path_params["idOrName"], data

    async def generate_key(self, request: Request) -> Response:
        from signpeer_core.rest import admin_log, json_response

        admin, worker, data = await self._admin(request)
        alias, keyalg, keyspec = (_optional_str(data, "alias"), _optional_str(data, "keyAlg"),
                                  _optional_str(data, "keySpec"))
        made = await anyio.to_thread.run_sync(admin.generate_key, worker, alias, keyalg, keyspec)
        admin_log.info("key %s generated in the token of worker %s by %s (pid %s)", made, worker,
                       admin.admin.name, os.getpid())
        return json_response({"alias": made, "pid": os.getpid()})

    async def test_key(self, request: Request) -> Response:
        from signpeer_core.rest import json_response

        admin, worker, data = await self._admin(request)
        alias = _optional_str(data, "alias")

        def run() -> list[dict[str, Any]]:
            results = admin.test_key(worker, alias)
            token = admin.token(worker)[1] if results else None
            out = []
            for r in results:
                chain = token.certificate_chain(r.alias) if token is not None and r.success else []
                out.append({"alias": r.alias, "success": r.success, "description": r.description,
                            "error": r.error, "line": r.line(),
                            "certificate": (f"{format_dn(chain[0].subject)} (issuer {format_dn(chain[0].issuer)})"
                                            if chain else None)})
            return out

        results = await anyio.to_thread.run_sync(run)
        return json_response({"results": results, "pid": os.getpid()})

    async def entries(self, request: Request) -> Response:
        from signpeer_core.rest import json_response

        admin, worker, _ = await self._admin(request)
        entries = await anyio.to_thread.run_sync(lambda: token_entries(admin.token(worker)[1]))
        return json_response({"entries": entries, "pid": os.getpid()})

    async def certificate_request(self, request: Request) -> Response:
        from signpeer_core.rest import json_response

        admin, worker, data = await self._admin(request)
        dn, sig_alg = _required_str(data, "subjectDN"), _required_str(data, "signatureAlgorithm")
        alias, next_key, explicit = _optional_str(data, "alias"), _bool(data, "nextKey"), _bool(data, "explicitEcc")
        if alias and next_key:
            raise BadRequestError('give either "alias" or "nextKey", not both')
        result = await anyio.to_thread.run_sync(
            lambda: admin.generate_csr(worker, dn, sig_alg, alias=alias, next_key=next_key, explicit_ecc=explicit))
        return json_response({"pem": result.pem.decode(), "alias": result.alias, "pid": os.getpid()})
