"""The public plugin API of signpeer: everything a plugin may import from the core.

Plugins (tokens, workers, CA connectors, commands, routes, Admin Web pages) import from this
module and nothing else of ``signpeer_core`` (``signpeer_core.testing`` and its pytest fixtures
are for tests). A contract checked in CI (``tests/test_architecture.py``) keeps the plugins in
this repository to it. Names not listed in ``__all__`` are internal and may change in any
release; the names here follow :data:`API_VERSION` (a minor adds names, a major may break them).
``docs/writing-plugins.md`` shows each extension point with a complete, tested example.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

from signpeer_core import API_VERSION, __version__, hookimpl

if TYPE_CHECKING:  # the names below are imported on first use (see __getattr__)
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.audit import MASK, Admin, AuditEvent, is_secret_key
    from signpeer_core.auth import Authorizer, BearerAuthorizer
    from signpeer_core.caconnector import CAConnector, CARefusedError, CertificateRequest
    from signpeer_core.certificates import (
        build_chain,
        decode_certificate_property,
        encode_certificate_property,
        order_chain,
    )
    from signpeer_core.claims import MISSING as MISSING_CLAIM
    from signpeer_core.claims import claim_text, claim_values, lookup_claim
    from signpeer_core.cli.base import Command, CommandContext
    from signpeer_core.clientrules import (
        KEY_IDS_SUFFIX,
        ClientRule,
        describe_rule,
        parse_bound_rules,
        parse_rules,
        parse_serial,
        rule_from_certificate_file,
        serialize_rules,
    )
    from signpeer_core.cms import add_signature_time_stamp, sign_cms, signature_value
    from signpeer_core.cms import digest_name as cms_digest_name
    from signpeer_core.config import CRYPTO_WORKER, PROCESSABLE, WorkerConfig, global_value, is_true
    from signpeer_core.directroutes import DirectRoute
    from signpeer_core.errors import (
        AuthenticationError,
        AuthorizationError,
        BadRequestError,
        ClientAbortError,
        ConfigurationError,
        ConflictError,
        CryptoTokenAuthenticationError,
        CryptoTokenOfflineError,
        DatabaseUnavailableError,
        KeyNotFoundError,
        NotFoundError,
        PluginError,
        RequestTooLargeError,
        ServerUnreachableError,
        ServiceUnavailableError,
        SignpeerError,
        TimeStampError,
        TLSError,
        TooManyRequestsError,
        TransportError,
        UnknownWorkerError,
        WorkerOfflineError,
    )
    from signpeer_core.handoff import run as run_in_thread
    from signpeer_core.handoff import submit as submit_to_thread
    from signpeer_core.httpclient import HttpClient, KeptConnection, base_url, tls_context
    from signpeer_core.httpserver import basic_credentials, bearer_token, json_body, read_body
    from signpeer_core.identifiers import (
        MAX_WORKER_ID,
        check_encodable,
        check_identifier,
        is_number,
        shorten,
        worker_id_of,
    )
    from signpeer_core.identity import CertificateIdentity
    from signpeer_core.issuing import IssuingCA, IssuingError
    from signpeer_core.issuing import issue as issue_certificate
    from signpeer_core.keys import (
        KeySpec,
        PrivateKey,
        PublicKey,
        SignatureAlgorithm,
        build_csr,
        certificate_pem,
        csr_signature_algorithm,
        describe_key,
        generate_software_key,
        load_certificates,
        parse_key_spec,
        placeholder_certificate,
        public_key_der,
        sign,
        signature_algorithm,
        verify,
    )
    from signpeer_core.metrics import Collector, CounterMetricFamily, GaugeMetricFamily, status_outcome
    from signpeer_core.metrics import counter as metrics_counter
    from signpeer_core.metrics import gauge as metrics_gauge
    from signpeer_core.metrics import histogram as metrics_histogram
    from signpeer_core.metricsendpoint import metrics_snapshot
    from signpeer_core.mtls import client_certificate
    from signpeer_core.names import escape_dn_value, format_dn, parse_dn, split_unescaped, tokenized_issuer_dn
    from signpeer_core.pipeline import Caller, Pipeline, TransportRequest
    from signpeer_core.refusals import record_refusal
    from signpeer_core.roles import (
        ADMIN,
        ALLOWANYWSADMIN,
        ARCHIVE_AUDITOR,
        AUDITOR,
        PEER_SYSTEM,
        ROLES,
        allow_any_admin,
        holds,
        roles_of,
        rules_by_role,
    )
    from signpeer_core.runtime import Runtime
    from signpeer_core.services import Services
    from signpeer_core.settings import Settings
    from signpeer_core.signers import BaseSigner, CMSSigner, CryptoWorker, PlainSigner
    from signpeer_core.storage import Database, MigrationSource
    from signpeer_core.storage.nodes import NodeProcess
    from signpeer_core.timestamping import QUERY_TYPE as TIMESTAMP_QUERY_TYPE
    from signpeer_core.timestamping import REPLY_TYPE as TIMESTAMP_REPLY_TYPE
    from signpeer_core.timestamping import TimeStamper, TimeStampOptions, TimeStampResponse
    from signpeer_core.tokens import (
        CryptoToken,
        KeyHandle,
        KeyInfo,
        KeystoreCreator,
        PreparedSignature,
        PreparedSigner,
        PropertyDoc,
        RequestInfo,
        SessionKeyToken,
        key_map_signer,
    )
    from signpeer_core.tracing import recording as tracing_recording
    from signpeer_core.tracing import span as tracing_span
    from signpeer_core.workers import SignRequest, SignResponse, Worker, WorkerStatus

hookspec = pluggy.HookspecMarker("signpeer")
"""Marker for hooks a plugin declares for other plugins (see ``signpeer_add_hookspecs``)."""

__all__ = [  # grouped by concept, as docs/writing-plugins.md lists them
    # versions and hook markers
    "API_VERSION", "__version__", "hookimpl", "hookspec",
    # the process's services
    "Services", "Settings", "Runtime",
    # workers and signers
    "Worker", "WorkerStatus", "SignRequest", "SignResponse", "BaseSigner", "PlainSigner", "CMSSigner",
    "CryptoWorker", "WorkerConfig", "PROCESSABLE", "CRYPTO_WORKER", "PropertyDoc", "global_value", "is_true",
    # crypto tokens
    "CryptoToken", "KeyHandle", "KeyInfo", "KeystoreCreator", "RequestInfo", "SessionKeyToken",
    "PreparedSignature", "PreparedSigner", "key_map_signer",
    # CA connectors and issuing
    "CAConnector", "CertificateRequest", "CARefusedError", "IssuingCA", "IssuingError", "issue_certificate",
    # commands
    "Command", "CommandContext",
    # the signing pipeline, HTTP routes and clients
    "Pipeline", "Caller", "TransportRequest", "json_body", "read_body", "basic_credentials", "bearer_token",
    "HttpClient", "KeptConnection", "base_url", "tls_context", "DirectRoute",
    # a hot path's trips to a worker thread (cheaper than anyio's)
    "run_in_thread", "submit_to_thread",
    # worker authorizers (AUTHTYPE) and the claims of verified tokens
    "Authorizer", "BearerAuthorizer", "lookup_claim", "claim_text", "claim_values", "MISSING_CLAIM",
    # identifiers from outside: worker ids, identifier text
    "worker_id_of", "is_number", "MAX_WORKER_ID", "check_identifier", "check_encodable", "shorten",
    # errors
    "SignpeerError", "ConfigurationError", "PluginError", "BadRequestError", "RequestTooLargeError", "ClientAbortError",
    "UnknownWorkerError", "NotFoundError", "KeyNotFoundError", "AuthenticationError", "AuthorizationError",
    "ConflictError", "CryptoTokenOfflineError", "CryptoTokenAuthenticationError", "WorkerOfflineError",
    "ServiceUnavailableError", "TransportError", "ServerUnreachableError", "TLSError", "TimeStampError",
    "TooManyRequestsError", "DatabaseUnavailableError",
    # keys
    "KeySpec", "PrivateKey", "PublicKey", "SignatureAlgorithm", "sign", "verify", "parse_key_spec",
    "generate_software_key", "describe_key", "signature_algorithm", "csr_signature_algorithm", "build_csr",
    "public_key_der",
    # CMS and signature time-stamps (RFC 3161)
    "sign_cms", "cms_digest_name", "signature_value", "add_signature_time_stamp", "TimeStamper", "TimeStampOptions",
    "TimeStampResponse",
    "TIMESTAMP_QUERY_TYPE", "TIMESTAMP_REPLY_TYPE",
    # certificates and names
    "load_certificates", "certificate_pem", "placeholder_certificate", "decode_certificate_property",
    "encode_certificate_property", "build_chain", "order_chain", "format_dn", "parse_dn", "split_unescaped",
    "escape_dn_value", "tokenized_issuer_dn",
    # client certificates, their rules and roles
    "client_certificate", "CertificateIdentity", "ClientRule", "parse_rules", "parse_serial", "serialize_rules",
    "KEY_IDS_SUFFIX", "describe_rule", "parse_bound_rules",
    "rule_from_certificate_file", "ADMIN", "AUDITOR", "ARCHIVE_AUDITOR", "PEER_SYSTEM", "ROLES", "ALLOWANYWSADMIN",
    "roles_of", "rules_by_role", "holds", "allow_any_admin",
    # administration: every configuration change, with its audit record, published in one transaction
    "WorkerAdmin", "Admin", "AuditEvent", "MASK", "is_secret_key", "record_refusal",
    # storage: a plugin's own tables, notifications and locks across processes and nodes, the node registry
    "Database", "MigrationSource", "NodeProcess",
    # metrics (signpeer_core.metrics): event metrics, and the collectors of the signpeer_metrics hook
    "metrics_counter", "metrics_histogram", "metrics_gauge", "status_outcome", "Collector", "GaugeMetricFamily",
    "CounterMetricFamily", "metrics_snapshot",
    # traces (signpeer_core.tracing): a plugin's stages as spans of the signing request, free when tracing is off
    "tracing_span", "tracing_recording",
]

#: Where each name of ``__all__`` lives: ``module: "Name alias=original ..."``. A name is imported
#: from its module the first time it is used (PEP 562), so a process that needs a few names (a
#: ``signpeer`` command, a plugin's registration hooks) does not import SQLAlchemy, Starlette and
#: every signer. The ``TYPE_CHECKING`` imports above list the same names for type checkers;
#: ``tests/test_plugin_api.py`` checks that both lists and ``__all__`` agree.
_SOURCES: dict[str, str] = {
    "signpeer_core.admin": "WorkerAdmin",
    "signpeer_core.audit": "MASK Admin AuditEvent is_secret_key",
    "signpeer_core.auth": "Authorizer BearerAuthorizer",
    "signpeer_core.caconnector": "CAConnector CARefusedError CertificateRequest",
    "signpeer_core.certificates": "build_chain decode_certificate_property encode_certificate_property order_chain",
    "signpeer_core.claims": "claim_text claim_values lookup_claim MISSING_CLAIM=MISSING",
    "signpeer_core.cli.base": "Command CommandContext",
    "signpeer_core.clientrules": (
        "KEY_IDS_SUFFIX ClientRule describe_rule parse_bound_rules parse_rules parse_serial "
        "rule_from_certificate_file serialize_rules"
    ),
    "signpeer_core.cms": "add_signature_time_stamp sign_cms signature_value cms_digest_name=digest_name",
    "signpeer_core.config": "CRYPTO_WORKER PROCESSABLE WorkerConfig global_value is_true",
    "signpeer_core.errors": (
        "AuthenticationError AuthorizationError BadRequestError ClientAbortError ConfigurationError "
        "ConflictError CryptoTokenAuthenticationError CryptoTokenOfflineError DatabaseUnavailableError "
        "KeyNotFoundError NotFoundError PluginError RequestTooLargeError ServerUnreachableError "
        "ServiceUnavailableError SignpeerError TimeStampError TLSError TooManyRequestsError TransportError "
        "UnknownWorkerError WorkerOfflineError"
    ),
    "signpeer_core.directroutes": "DirectRoute",
    "signpeer_core.handoff": "run_in_thread=run submit_to_thread=submit",
    "signpeer_core.httpclient": "HttpClient KeptConnection base_url tls_context",
    "signpeer_core.httpserver": "basic_credentials bearer_token json_body read_body",
    "signpeer_core.identifiers": "MAX_WORKER_ID check_encodable check_identifier is_number shorten worker_id_of",
    "signpeer_core.identity": "CertificateIdentity",
    "signpeer_core.issuing": "IssuingCA IssuingError issue_certificate=issue",
    "signpeer_core.keys": (
        "KeySpec PrivateKey PublicKey SignatureAlgorithm build_csr certificate_pem csr_signature_algorithm "
        "describe_key generate_software_key load_certificates parse_key_spec placeholder_certificate "
        "public_key_der sign signature_algorithm verify"
    ),
    "signpeer_core.metrics": (
        "Collector CounterMetricFamily GaugeMetricFamily status_outcome metrics_counter=counter "
        "metrics_gauge=gauge metrics_histogram=histogram"
    ),
    "signpeer_core.metricsendpoint": "metrics_snapshot",
    "signpeer_core.mtls": "client_certificate",
    "signpeer_core.names": "escape_dn_value format_dn parse_dn split_unescaped tokenized_issuer_dn",
    "signpeer_core.pipeline": "Caller Pipeline TransportRequest",
    "signpeer_core.refusals": "record_refusal",
    "signpeer_core.roles": (
        "ADMIN ALLOWANYWSADMIN ARCHIVE_AUDITOR AUDITOR PEER_SYSTEM ROLES allow_any_admin holds roles_of "
        "rules_by_role"
    ),
    "signpeer_core.runtime": "Runtime",
    "signpeer_core.services": "Services",
    "signpeer_core.settings": "Settings",
    "signpeer_core.signers": "BaseSigner CMSSigner CryptoWorker PlainSigner",
    "signpeer_core.storage": "Database MigrationSource",
    "signpeer_core.storage.nodes": "NodeProcess",
    "signpeer_core.timestamping": (
        "TimeStamper TimeStampOptions TimeStampResponse TIMESTAMP_QUERY_TYPE=QUERY_TYPE "
        "TIMESTAMP_REPLY_TYPE=REPLY_TYPE"
    ),
    "signpeer_core.tokens": ("CryptoToken KeyHandle KeyInfo KeystoreCreator PreparedSignature PreparedSigner PropertyDoc "
                             "RequestInfo SessionKeyToken key_map_signer"),
    "signpeer_core.tracing": "tracing_span=span tracing_recording=recording",
    "signpeer_core.workers": "SignRequest SignResponse Worker WorkerStatus",
}

def _lazy_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for module, names in _SOURCES.items():
        for entry in names.split():
            name, _, attr = entry.partition("=")
            table[name] = (module, attr or name)
    return table


_LAZY = _lazy_table()

def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it in the module (PEP 562)."""
    source = _LAZY.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source[0]), source[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
