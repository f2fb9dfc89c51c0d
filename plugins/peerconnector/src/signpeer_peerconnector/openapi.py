"""The OpenAPI 3.1 document of the peer protocol, served at ``/signserver/peer/v1/openapi.json``.

Written by hand next to docs/peer-protocol.md (the prose with curl/openssl examples); a test
checks that every route of :mod:`.routes` appears here and in the document.
"""

from __future__ import annotations

from typing import Any

from signpeer_peerconnector.protocol import BASE_PATH, PAGE_SIZE, PEM_CHAIN_TYPE, PKCS10_PEM_TYPE, VERSION

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Bad request (malformed JSON or PEM, bad status value, unsupported version)"),
    "401": _json(_ref("Error"), "No TLS client certificate was presented"),
    "403": _json(_ref("Error"), "Unauthorized: incoming peer connections are off or the certificate has no "
                               "Peer System rule (WSPEERS)"),
    "404": _json(_ref("Error"), "No such key binding (or not visible to peers)"),
}

_BINDING_PARAM = {"name": "binding", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "Key binding id (worker id) or name (worker NAME)"}


def extra_operations(route: Any) -> dict[str, Any]:
    """The operations of another plugin's route (hook ``signpeer_peer_routes``), from its docstring:
    its path parameters declared, and every answer the guard and the error tree can give."""
    summary = (getattr(route.endpoint, "__doc__", None) or route.name or route.path).strip().splitlines()[0]
    methods = sorted(m for m in (route.methods or ()) if m != "HEAD")
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in getattr(route, "param_convertors", {})]
    responses = {"200": _json({"type": "object"}, "OK"), **_ERRORS,
                 "409": _json(_ref("Error"), "Conflicts with the current state; nothing changed"),
                 "503": _json(_ref("Error"), "A dependency did not answer in time")}
    responses["404"] = _json(_ref("Error"), "Not found")
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if any(m in ("POST", "PUT") for m in methods):
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {m.lower(): operation for m in methods}


def openapi_document(version: str) -> dict[str, Any]:
    """The document; ``version`` is the plugin version."""

    def op(summary: str, ok: dict[str, Any], errors: tuple[str, ...] = ("401", "403"),
           more: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        responses = {"200": ok, **{code: _ERRORS[code] for code in errors}, **(more or {})}
        return {"summary": summary, **extra, "responses": responses}

    binding_ops = ("400", "401", "403", "404")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "signpeer peer protocol",
            "version": f"{VERSION} (signpeer-peerconnector {version})",
            "description": "JSON over HTTPS with a TLS client certificate on every call. The CA connects in; "
                           "the signing server never connects out. See docs/peer-protocol.md.",
        },
        "servers": [{"url": BASE_PATH}],
        "paths": {
            "/ping": {
                "get": op("Check connectivity and authorization", _json(_ref("Ping"), "Authorized")),
                "post": op("Same as GET", _json(_ref("Ping"), "Authorized")),
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/keybindings": {
                "get": {**op("List the key bindings (visible workers), a page at a time",
                             _json({"type": "object", "properties": {
                                 "keyBindings": {"type": "array", "items": _ref("KeyBinding")},
                                 "nextCursor": {"type": "string", "description": "present when more bindings "
                                                "follow: pass it as after= to get the next page"}}},
                                 f"Up to limit (default {PAGE_SIZE}) bindings by id"), ("400", "401", "403")),
                        "parameters": [
                            {"name": "limit", "in": "query", "required": False,
                             "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE},
                             "description": f"bindings per page (1 to {PAGE_SIZE}, default {PAGE_SIZE})"},
                            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                             "description": "the nextCursor of the previous page"}]},
            },
            "/keybindings/{binding}": {
                "parameters": [_BINDING_PARAM],
                "get": op("Get one key binding", _json(_ref("KeyBinding"), "The binding"), binding_ops),
            },
            "/keybindings/{binding}/nextkey": {
                "parameters": [_BINDING_PARAM],
                "post": op(
                    "Generate the next key pair (KEYALG/KEYSPEC) into NEXTCERTSIGNKEY; returns the pending "
                    "one unless replace is true",
                    _json(_ref("NextKey"), "The pending next key, created before"),
                    binding_ops,
                    more={"201": _json(_ref("NextKey"), "The next key, created by this call")},
                    requestBody={"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"replace": {"type": "boolean", "default": False}}}}}},
                ),
            },
            "/keybindings/{binding}/csr": {
                "parameters": [_BINDING_PARAM,
                               {"name": "format", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["json", "pem"]},
                                "description": "pem: answer with the bare PEM request (also: Accept: "
                                               f"{PKCS10_PEM_TYPE})"}],
                "post": op("A PKCS#10 request for the next key, else the current key",
                           {"description": "The request", "content": {
                               "application/json": {"schema": _ref("Csr")},
                               PKCS10_PEM_TYPE: {"schema": {"type": "string"}}}}, binding_ops),
            },
            "/keybindings/{binding}/certificate": {
                "parameters": [_BINDING_PARAM],
                "post": op(
                    "Install a certificate chain (leaf first) for the next or current key",
                    _json(_ref("Installed"), "Installed and active"),
                    binding_ops,
                    more={"409": _json(_ref("Error"), "The certificate matches neither the next nor the current "
                                                       "key; nothing changed")},
                    requestBody={"required": True, "content": {
                        "application/json": {"schema": {"type": "object", "required": ["certificateChain"],
                                                        "properties": {"certificateChain": {
                                                            "oneOf": [{"type": "string"},
                                                                      {"type": "array", "items": {"type": "string"}}],
                                                            "description": "PEM, leaf first"}}}},
                        PEM_CHAIN_TYPE: {"schema": {"type": "string"}}}},
                ),
            },
            "/keybindings/{binding}/status": {
                "parameters": [_BINDING_PARAM],
                "post": op("Set ACTIVE or DISABLED (the worker's DISABLED property)",
                           _json(_ref("KeyBinding"), "The binding after the change"), binding_ops,
                           requestBody={"required": True, "content": {"application/json": {"schema": {
                               "type": "object", "required": ["status"],
                               "properties": {"status": {"type": "string", "enum": ["ACTIVE", "DISABLED"]}}}}}}),
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Identity": {"type": "object", "properties": {
                    "subject": {"type": "string"}, "issuer": {"type": "string"},
                    "serial": {"type": "string", "description": "lower-case hex"}}},
                "Ping": {"type": "object", "properties": {
                    "protocol": {"const": "signpeer-peer"}, "version": {"const": VERSION},
                    "server": {"type": "string"}, "time": {"type": "string"}, "peer": _ref("Identity")}},
                "Certificate": {"type": ["object", "null"], "properties": {
                    "subject": {"type": "string"}, "issuer": {"type": "string"},
                    "serialNumber": {"type": "string"}, "notBefore": {"type": "string", "format": "date-time"},
                    "notAfter": {"type": "string", "format": "date-time"}}},
                "KeyBinding": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"},
                    "status": {"enum": ["ACTIVE", "DISABLED"]},
                    "operationalStatus": {"enum": ["ONLINE", "OFFLINE"]},
                    "offlineReasons": {"type": "array", "items": {"type": "string"}},
                    "keyPairAlias": {"type": ["string", "null"]},
                    "nextKeyPairAlias": {"type": ["string", "null"]},
                    "signatureAlgorithm": {"type": ["string", "null"]},
                    "cryptoToken": {"type": ["string", "null"]},
                    "keySpec": {"type": ["string", "null"]},
                    "certificate": _ref("Certificate"),
                    "certificateId": {"type": ["string", "null"],
                                      "description": "SHA-1 fingerprint (hex) only when PEERS_ISSUED=true"},
                    "peersIssued": {"type": "boolean"}}},
                "NextKey": {"type": "object", "properties": {
                    "nextKeyPairAlias": {"type": "string"}, "created": {"type": "boolean"},
                    "publicKey": {"type": "string", "description": "PEM SubjectPublicKeyInfo"},
                    "keyBinding": _ref("KeyBinding")}},
                "Csr": {"type": "object", "properties": {
                    "csr": {"type": "string", "description": "PEM"}, "keyPairAlias": {"type": "string"},
                    "subjectDn": {"type": "string"}, "signatureAlgorithm": {"type": "string"},
                    "forNextKey": {"type": "boolean"}}},
                "Installed": {"type": "object", "properties": {
                    "keyPairAlias": {"type": "string"}, "promoted": {"type": "boolean"},
                    "chainLength": {"type": "integer"}, "keyBinding": _ref("KeyBinding")}},
            },
        },
    }
