"""SignServer's deprecated authorized-client commands, kept for old scripts:
``addauthorizedclient``, ``removeauthorizedclient``, ``listauthorizedclients``. Each rule is a
``CERTIFICATE_SERIALNO`` match with an issuer DN in the worker's ``AUTHORIZED_CLIENTS`` (what
``authorizedclients -matchSubjectWithType CERTIFICATE_SERIALNO`` writes); active after ``reload``.
"""

from __future__ import annotations

import argparse

from signpeer_core.auth import (
    AUTHORIZED_CLIENTS_PROPERTY,
    AuthorizedClient,
    parse_authorized_clients,
    serialize_authorized_clients,
)
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.cli.server import bind_issuer
from signpeer_core.cli.workers import worker_admin


class _SerialIssuerCommand(Command):
    """A worker, a certificate serial number and an issuer DN, as SignServer's deprecated forms take them."""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("serial", help="certificate serial number (hex)")
        parser.add_argument("issuer", help="issuer DN")

    @staticmethod
    def rule(args: argparse.Namespace, ctx: CommandContext) -> AuthorizedClient:
        """The rule, its issuer bound to the trusted client CA's key as authorizedclients binds it."""
        return bind_issuer(AuthorizedClient.create("CERTIFICATE_SERIALNO", args.serial, args.issuer), ctx.settings)


class AddAuthorizedClientCommand(_SerialIssuerCommand):
    name = "addauthorizedclient"
    help = "deprecated SignServer form of authorizedclients -add (certificate serial number and issuer DN)"
    description = "Example: signpeer addauthorizedclient CMSSigner 4fe9278255cba7b \"CN=DSS Sub CA 11,OU=Testing,O=SignServer,C=SE\""

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        config = admin.worker_config(args.worker)
        rule = self.rule(args, ctx)
        rules = parse_authorized_clients(config.get_str(AUTHORIZED_CLIENTS_PROPERTY))
        ctx.print(f"Adding the client certificate with sn {rule.matchSubjectWithValue} and issuerDN : "
                  f"{rule.matchIssuerWithValue} for signer {config.worker_id}")
        if all(r.key() != rule.key() for r in rules):
            admin.update_worker(config.worker_id,
                                {AUTHORIZED_CLIENTS_PROPERTY: serialize_authorized_clients([*rules, rule])})
        ctx.print("See current configuration with the getconfig command, activate it with the reload command")
        return 0


class RemoveAuthorizedClientCommand(_SerialIssuerCommand):
    name = "removeauthorizedclient"
    help = "deprecated SignServer form of authorizedclients -remove (certificate serial number and issuer DN)"

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        config = admin.worker_config(args.worker)
        rule = self.rule(args, ctx)
        rules = parse_authorized_clients(config.get_str(AUTHORIZED_CLIENTS_PROPERTY))
        ctx.print(f"Removing the client certificate with sn {rule.matchSubjectWithValue} and issuerDN : "
                  f"{rule.matchIssuerWithValue} for signer {config.worker_id}")
        kept = [r for r in rules if r.key() != rule.key()]
        if len(kept) == len(rules):
            ctx.print("  Error, the client certificate doesn't seem to exist")
            return 0
        admin.update_worker(config.worker_id, {AUTHORIZED_CLIENTS_PROPERTY: serialize_authorized_clients(kept)})
        ctx.print("  Client Removed")
        ctx.print("See current configuration with the getconfig command, activate it with the reload command")
        return 0


class ListAuthorizedClientsCommand(Command):
    name = "listauthorizedclients"
    help = "deprecated SignServer form of authorizedclients -list"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        config = worker_admin(ctx).worker_config(args.worker)
        rules = parse_authorized_clients(config.get_str(AUTHORIZED_CLIENTS_PROPERTY))
        ctx.print(f"OBSERVE that this command displays the stored configuration of worker {config.worker_id}, "
                  "active after reload")
        for r in rules:
            ctx.print(f"  {r.matchSubjectWithType} {r.matchSubjectWithValue}, {r.matchIssuerWithValue}")
        if not rules:
            ctx.print("  No authorized clients exists")
        return 0


COMMANDS: list[type[Command]] = [AddAuthorizedClientCommand, RemoveAuthorizedClientCommand,
                                 ListAuthorizedClientsCommand]
