"""The OpenAPI 3.1 document of the REST interface, served at ``/signserver/rest/v1/openapi.json``.

Written by hand next to ``docs/rest-api.md`` (the prose, with curl examples); the fuzz test
(``tests/test_fuzz.py``) runs schemathesis against it on a live server, and
``tests/test_openapi.py`` checks that it covers every REST route.
"""

from __future__ import annotations

from typing import Any

from signpeer_core import __version__

PREFIX = "/signserver/rest/v1"

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


_ID_OR_NAME = {"name": "idOrName", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "worker id (ASCII digits, 1 to 2147483647) or worker NAME (case-insensitive)"}
_REQUESTED_WITH = {"name": "X-Keyfactor-Requested-With", "in": "header", "required": True,
                   "schema": {"type": "string", "minLength": 1},
                   "description": "any non-empty value (a browser cannot add it to a cross-site form post)"}

_WORKER = {"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"}, "type": {"type": "string"},
    "implementation": {"type": "string"}, "status": {"enum": ["ACTIVE", "OFFLINE"]},
    "disabled": {"type": "boolean"}, "reasons": {"type": "array", "items": {"type": "string"}}}}


def openapi_document() -> dict[str, Any]:
    """The document (a new dict per call)."""
    admin_errors = {
        "400": _error("Malformed body or missing X-Keyfactor-Requested-With"),
        "401": _error("No administrator's TLS client certificate"),
        "403": _error("The client certificate is not an administrator (WSADMINS), or a wrong authentication code"),
        "404": _error("No such worker"),
        "503": _error("The crypto token cannot be reached"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "signpeer REST interface", "version": __version__,
                 "description": "SignServer's client REST interface (signing) plus the worker list, the health "
                                "check and token activation. See docs/rest-api.md."},
        "servers": [{"url": "/"}],
        "paths": {
            f"{PREFIX}/workers/{{idOrName}}/process": {
                "post": {
                    "summary": "Sign the request's data with one worker",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ProcessRequest"}}}},
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/ProcessResponse"}, "Signed"),
                        "400": _error("Malformed request (see docs/rest-api.md)"),
                        "401": _error("The worker needs credentials that were not sent"),
                        "403": _error("Credentials sent but not allowed"),
                        "404": _error("No such worker"),
                        "413": _error("Body over max_body_size"),
                        "503": _error("The worker is OFFLINE (the message lists the reasons)"),
                    },
                },
            },
            f"{PREFIX}/workers": {
                "get": {
                    "summary": "Every worker with its status",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "workers": {"type": "array", "items": {"$ref": "#/components/schemas/Worker"}}}},
                        "The workers"),
                        "401": _error("No administrator's TLS client certificate (when the list needs one)"),
                        "403": _error("The client certificate is not an administrator")},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/activate": {
                "post": {
                    "summary": "Activate the worker's crypto token in this server process (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["authCode"],
                        "properties": {"authCode": {"type": "string"}}}}}},
                    "responses": {"200": _json({"$ref": "#/components/schemas/Worker"}, "Activated"),
                                  **admin_errors},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/deactivate": {
                "post": {
                    "summary": "Deactivate the worker's crypto token in this server process (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "responses": {"200": _json({"$ref": "#/components/schemas/Worker"}, "Deactivated"),
                                  **admin_errors},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/keys": {
                "post": {
                    "summary": "generatekey in this server process's crypto token (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"content": {"application/json": {"schema": {
                        "type": "object", "properties": {
                            "alias": {"type": "string"}, "keyAlg": {"type": "string"},
                            "keySpec": {"type": "string"}}}}}},
                    "responses": {"200": _json({"type": "object", "properties": {
                        "alias": {"type": "string"}, "pid": {"type": "integer"}}}, "The key was generated"),
                        **admin_errors, "409": _error("The token already has a key with that alias")},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/keys/test": {
                "post": {
                    "summary": "testkey in this server process's crypto token (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"content": {"application/json": {"schema": {
                        "type": "object", "properties": {"alias": {"type": "string"}}}}}},
                    "responses": {"200": _json({"type": "object", "properties": {
                        "results": {"type": "array", "items": {"type": "object", "properties": {
                            "alias": {"type": "string"}, "success": {"type": "boolean"},
                            "description": {"type": "string"}, "error": {"type": "string"},
                            "line": {"type": "string"}, "certificate": {"type": ["string", "null"]}}}},
                        "pid": {"type": "integer"}}}, "One result per key tested"), **admin_errors},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/keys/entries": {
                "post": {
                    "summary": "querytokenentries: the key entries of this server process's crypto token (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": _json({"type": "object", "properties": {
                        "entries": {"type": "array", "items": {"type": "object", "properties": {
                            "alias": {"type": "string"}, "type": {"type": "string"},
                            "description": {"type": "string"}, "chain": {"type": "array", "items": {
                                "type": "object", "properties": {
                                    "subject": {"type": "string"}, "issuer": {"type": "string"}}}}}}},
                        "pid": {"type": "integer"}}}, "Every key entry, sorted by alias"), **admin_errors},
                },
            },
            f"{PREFIX}/workers/{{idOrName}}/certreq": {
                "post": {
                    "summary": "generatecertreq in this server process's crypto token (administrators)",
                    "parameters": [_ID_OR_NAME, _REQUESTED_WITH],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["subjectDN", "signatureAlgorithm"], "properties": {
                            "subjectDN": {"type": "string"}, "signatureAlgorithm": {"type": "string"},
                            "alias": {"type": "string"}, "nextKey": {"type": "boolean"},
                            "explicitEcc": {"type": "boolean"}}}}}},
                    "responses": {"200": _json({"type": "object", "properties": {
                        "pem": {"type": "string"}, "alias": {"type": "string"}, "pid": {"type": "integer"}}},
                        "The PKCS#10 request (PEM)"), **admin_errors},
                },
            },
            f"{PREFIX}/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}},
            },
            "/healthcheck": {
                "get": {
                    "summary": "ALLCLEAR when every enabled worker is ACTIVE",
                    "responses": {
                        "200": _json({"type": "object", "properties": {
                            "status": {"const": "ALLCLEAR"}, "workers": {"type": "integer"}}}, "All clear"),
                        "503": _json({"type": "object", "properties": {
                            "status": {"const": "OFFLINE"}, "error": {"type": "string"},
                            "offlineWorkers": {"type": "array", "items": {"type": "object"}}}},
                            "Some enabled worker is OFFLINE"),
                    },
                },
            },
            "/signserver/healthcheck/signserverhealth": {
                "get": {
                    "summary": "SignServer's load-balancer probe: ALLOK, or one line per problem",
                    "responses": {
                        "200": {"description": "All is well", "content": {"text/plain": {
                            "schema": {"const": "ALLOK"}}}},
                        "500": {"description": "One line per problem (the database, a worker not ACTIVE)",
                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                    },
                },
            },
        },
        "components": {"schemas": {
            "Error": _ERROR,
            "Worker": _WORKER,
            "ProcessRequest": {"type": "object", "required": ["data"], "properties": {
                "data": {"type": "string", "description": "text (encoding NONE) or base64 (encoding BASE64)"},
                "encoding": {"enum": ["NONE", "BASE64"], "default": "NONE"},
                "metaData": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "ProcessResponse": {"type": "object", "properties": {
                "archiveId": {"type": "string"}, "data": {"type": "string", "description": "base64"},
                "metaData": {"type": "object", "additionalProperties": {"type": "string"}},
                "requestId": {"type": "string"},
                "signerCertificate": {"type": ["string", "null"], "description": "base64 DER"}}},
        }},
    }
