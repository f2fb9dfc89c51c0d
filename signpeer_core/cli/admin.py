"""The administration commands of ``signpeer``, with SignServer's AdminCLI syntax.

``signpeer getstatus brief all`` works as ``bin/signserver getstatus brief all`` does, so existing
scripts keep working; ``--help`` and ``--json`` are additions. The commands live by concept in
:mod:`.workers` (status and configuration), :mod:`.tokens` (activation, keys, certificates),
:mod:`.plugins` and :mod:`.auditlog`; every change goes through
:class:`signpeer_core.admin.WorkerAdmin`, which writes the audit records.

Exit status, as SignServer's AdminCLI: 0 on success, 254 when the command failed (the message
on stderr says why), 255 for wrong usage (argparse).
"""

from __future__ import annotations

from signpeer_core.cli.auditlog import AuditLogCommand
from signpeer_core.cli.base import Command
from signpeer_core.cli.cluster import DbCommand, NodesCommand
from signpeer_core.cli.init import InitCommand
from signpeer_core.cli.plugins import PluginsCommand
from signpeer_core.cli.tokenentries import QueryTokenEntriesCommand
from signpeer_core.cli.tokens import (
    ActivateCryptoTokenCommand,
    ActivateSignTokenCommand,
    DeactivateCryptoTokenCommand,
    GenerateCertReqCommand,
    GenerateKeyCommand,
    ImportCertificateChainCommand,
    RemoveKeyCommand,
    RetireKeysCommand,
    TestKeyCommand,
    UploadSignerCertificateChainCommand,
    UploadSignerCertificateCommand,
)
from signpeer_core.cli.workers import (
    DumpPropertiesCommand,
    GetConfigCommand,
    GetPropertyCommand,
    GetStatusCommand,
    GetStatusPropertiesCommand,
    ReloadCommand,
    RemovePropertyCommand,
    RemoveWorkerCommand,
    SetPropertiesCommand,
    SetPropertyCommand,
    SetPropertyFromFileCommand,
)

COMMANDS: list[type[Command]] = [
    InitCommand,
    GetStatusCommand, GetConfigCommand, GetPropertyCommand, SetPropertyCommand, SetPropertyFromFileCommand,
    RemovePropertyCommand, GetStatusPropertiesCommand,
    SetPropertiesCommand, DumpPropertiesCommand, ReloadCommand, RemoveWorkerCommand,
    ActivateCryptoTokenCommand, ActivateSignTokenCommand, DeactivateCryptoTokenCommand,
    GenerateKeyCommand, TestKeyCommand, QueryTokenEntriesCommand, RemoveKeyCommand, RetireKeysCommand, GenerateCertReqCommand,
    UploadSignerCertificateCommand, UploadSignerCertificateChainCommand, ImportCertificateChainCommand,
    PluginsCommand, AuditLogCommand,
    NodesCommand, DbCommand,
]
