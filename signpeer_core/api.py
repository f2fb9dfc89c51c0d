"""The public plugin API of signpeer: everything a plugin may import from the core.

Plugins (tokens, workers, CA connectors, commands, routes) import from this module and nothing
else of ``signpeer_core`` (``signpeer_core.testing`` and the pytest fixtures are for tests).
A contract checked in CI (``tests/test_architecture.py``) keeps it so. Names not listed in
``__all__`` are internal and may change in any release; the names here follow
:data:`API_VERSION` (a minor adds names, a major may break them). ``docs/writing-plugins.md``
shows each extension point with a complete example.
"""

from __future__ import annotations

import pluggy

from signpeer_core import API_VERSION, __version__, hookimpl
from signpeer_core.caconnector import CAConnector, CARefusedError, CertificateRequest
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.clientrules import (
    ClientRule,
    parse_rules,
    parse_serial,
    rule_from_certificate_file,
    serialize_rules,
    tokenized_issuer_dn,
)
from signpeer_core.config import CRYPTO_WORKER, PROCESSABLE, WorkerConfig, global_value, is_true
from signpeer_core.errors import (
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CryptoTokenAuthenticationError,
    CryptoTokenOfflineError,
    KeyNotFoundError,
    NotFoundError,
    PluginError,
    RequestTooLargeError,
    ServiceUnavailableError,
    SignpeerError,
    UnknownWorkerError,
    WorkerOfflineError,
)
from signpeer_core.httpserver import basic_credentials, json_body
from signpeer_core.identity import CertificateIdentity
from signpeer_core.keys import (
    KeySpec,
    PrivateKey,
    PublicKey,
    SignatureAlgorithm,
    build_csr,
    certificate_pem,
    csr_signature_algorithm,
    describe_key,
    format_dn,
    generate_software_key,
    load_certificates,
    parse_dn,
    parse_key_spec,
    placeholder_certificate,
    public_key_der,
    sign,
    signature_algorithm,
    verify,
)
from signpeer_core.mtls import client_certificate
from signpeer_core.pipeline import Caller, Pipeline, TransportRequest
from signpeer_core.runtime import Runtime
from signpeer_core.services import Services
from signpeer_core.settings import Settings
from signpeer_core.storage import Admin, AuditEvent, Database, MigrationSource
from signpeer_core.signers import BaseSigner, CMSSigner, CryptoWorker, PlainSigner
from signpeer_core.tokens import CryptoToken, KeyHandle, KeyInfo, PropertyDoc, RequestInfo, SessionKeyToken
from signpeer_core.workers import SignRequest, SignResponse, Worker, WorkerStatus

hookspec = pluggy.HookspecMarker("signpeer")
"""Marker for hooks a plugin declares for other plugins (see ``signpeer_add_hookspecs``)."""

__all__ = [
    # versions and hook markers
    "API_VERSION", "__version__", "hookimpl", "hookspec",
    # the process's services
    "Services", "Settings", "Runtime",
    # storage: a plugin's own tables, the audit log
    "Database", "MigrationSource", "Admin", "AuditEvent",
    # workers and signers
    "Worker", "WorkerStatus", "SignRequest", "SignResponse", "BaseSigner", "PlainSigner", "CMSSigner",
    "CryptoWorker", "WorkerConfig", "PROCESSABLE", "CRYPTO_WORKER", "PropertyDoc", "global_value", "is_true",
    # crypto tokens
    "CryptoToken", "KeyHandle", "KeyInfo", "RequestInfo", "SessionKeyToken",
    # CA connectors
    "CAConnector", "CertificateRequest", "CARefusedError",
    # commands
    "Command", "CommandContext",
    # errors
    "SignpeerError", "ConfigurationError", "PluginError", "BadRequestError", "RequestTooLargeError",
    "UnknownWorkerError", "NotFoundError", "KeyNotFoundError", "AuthenticationError", "AuthorizationError",
    "ConflictError", "CryptoTokenOfflineError", "CryptoTokenAuthenticationError", "WorkerOfflineError",
    "ServiceUnavailableError",
    # keys, certificates, names
    "KeySpec", "PrivateKey", "PublicKey", "SignatureAlgorithm", "sign", "verify", "parse_key_spec", "generate_software_key", "describe_key",
    "signature_algorithm", "csr_signature_algorithm", "build_csr", "placeholder_certificate", "public_key_der",
    "load_certificates", "certificate_pem", "format_dn", "parse_dn",
    # HTTP routes, and the pipeline every route that signs calls
    "json_body", "basic_credentials", "Pipeline", "Caller", "CertificateIdentity", "TransportRequest",
    # client certificates and their rules
    "client_certificate", "ClientRule", "parse_rules", "parse_serial", "serialize_rules",
    "rule_from_certificate_file", "tokenized_issuer_dn",
]
