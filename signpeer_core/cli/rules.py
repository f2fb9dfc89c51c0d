"""``wsadmins``, ``wsauditors``, ``wsarchiveauditors``: SignServer's client-rule commands.

All four rule commands of SignServer (these three and the peer connector's ``wspeersystems``)
share one syntax, one set of messages and one storage (spec §5.3), so they share this code:
:class:`ClientRulesCommand` is parametrised by the global property it edits, and
:func:`add_rule` / :func:`remove_rule` are the operations the Admin Web uses as well.

Syntax (GNU-style single-dash options, as in SignServer)::

    signpeer wsadmins -add -certserialno <serial hex> -issuerdn <issuer DN>
    signpeer wsadmins -add -cert <PEM or DER file>
    signpeer wsadmins -remove -certserialno <serial hex> -issuerdn <issuer DN>
    signpeer wsadmins -list

Messages and exit codes are SignServer's (0; -1 for bad arguments, printed without a prefix).
Changes are written to ``GLOB.<PROPERTY>`` through :class:`~signpeer_core.admin.WorkerAdmin`
(audit event ``SET_GLOBAL_PROPERTY``) and then the configuration generation is bumped, so every
running server process picks the rule up within its reload poll interval: an administrator
who adds a rule expects it to work without a separate ``reload``.

One deliberate difference from SignServer: ``-remove -cert <file>`` removes the certificate's
rule (SignServer's shared code silently removes nothing and prints ``No such rule``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.clientrules import (
    ClientRule,
    parse_rules,
    parse_serial,
    rule_from_certificate_file,
    serialize_rules,
)
from signpeer_core.errors import BadRequestError
from signpeer_core.storage import Admin

if TYPE_CHECKING:
    from signpeer_core.admin import WorkerAdmin

#: SignServer's CLI return codes: 0 success, -1 bad arguments (the shell sees 255).
RETURN_INVALID_ARGUMENTS = -1


def current_rules(admin: WorkerAdmin, prop: str) -> list[ClientRule]:
    """The rules now stored in ``GLOB.<prop>`` (the database, not the loaded runtime)."""
    return parse_rules(admin.store.global_properties().get(f"GLOB.{prop.upper()}"))


def add_rule(admin: WorkerAdmin, prop: str, rule: ClientRule) -> bool:
    """Add ``rule`` to ``GLOB.<prop>``; False (and nothing written) when it is already there."""
    rules = current_rules(admin, prop)
    if rule in rules:
        return False
    admin.set_global("GLOB", prop, serialize_rules([*rules, rule]))
    return True


def remove_rule(admin: WorkerAdmin, prop: str, rule: ClientRule) -> bool:
    """Remove ``rule`` from ``GLOB.<prop>``; False (and nothing written) when it is not there."""
    rules = current_rules(admin, prop)
    if rule not in rules:
        return False
    admin.set_global("GLOB", prop, serialize_rules([r for r in rules if r != rule]))
    return True


class ClientRulesCommand(Command):
    """The shared ``-add``/``-remove``/``-list`` command; subclasses set ``name`` and ``property``."""

    property: ClassVar[str] = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-add", action="store_true", help="add a rule")
        parser.add_argument("-remove", action="store_true", help="remove a rule")
        parser.add_argument("-list", action="store_true", help="list the rules")
        parser.add_argument("-certserialno", metavar="<serial hex>", help="certificate serial number (hex)")
        parser.add_argument("-issuerdn", metavar="<issuer DN>", help="issuer DN, exactly as in the rule")
        parser.add_argument("-cert", metavar="<PEM or DER file>",
                            help="take serial number and issuer DN from this certificate")

    def rule(self, args: argparse.Namespace) -> ClientRule:
        """The rule the options name; the messages are SignServer's."""
        if args.cert:
            if args.certserialno or args.issuerdn:
                raise BadRequestError("Can't use the option -cert at the same time as -certserialno and -issuerdn")
            try:
                data = Path(args.cert).read_bytes()
            except OSError as exc:
                raise BadRequestError(f"cannot read the certificate file {args.cert}: {exc.strerror}") from None
            return rule_from_certificate_file(data)
        if not args.certserialno:
            raise BadRequestError("Missing option: -certserialno")
        if not args.issuerdn:
            raise BadRequestError("Missing option: -issuerdn")
        return ClientRule(parse_serial(args.certserialno), args.issuerdn.strip())

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.admin import WorkerAdmin

        # The first of add, remove, list wins, as in SignServer.
        if args.add:
            operation = "add"
        elif args.remove:
            operation = "remove"
        elif args.list:
            operation = "list"
        else:
            ctx.error("Missing operation: -add, -remove or -list")
            return RETURN_INVALID_ARGUMENTS
        rule: ClientRule | None = None
        if operation != "list":
            try:
                rule = self.rule(args)
            except BadRequestError as exc:
                # SignServer prints the bare message and returns -1 for bad arguments.
                ctx.error(exc.message)
                return RETURN_INVALID_ARGUMENTS
        admin = WorkerAdmin(ctx.services(load=False), Admin.cli())
        if operation == "list" or rule is None:
            ctx.print("Authorizations:")
            for listed in current_rules(admin, self.property):
                ctx.print(f"{listed.serial_hex:<20} {listed.issuer_dn}")
            return 0
        if operation == "add":
            changed = add_rule(admin, self.property, rule)
            ctx.print("Rule added" if changed else "Rule already exists")
        else:
            changed = remove_rule(admin, self.property, rule)
            if changed:
                ctx.print("Rule removed")
            else:
                ctx.error("No such rule")
        if changed:
            # Running servers reload within their poll interval; no separate `reload` needed.
            admin.store.bump_config_generation()
        return 0


class WSAdminsCommand(ClientRulesCommand):
    name = "wsadmins"
    help = "Manages authorizations for administrators"
    property = "WSADMINS"


class WSAuditorsCommand(ClientRulesCommand):
    name = "wsauditors"
    help = "Manages authorizations for auditors"
    property = "WSAUDITORS"


class WSArchiveAuditorsCommand(ClientRulesCommand):
    name = "wsarchiveauditors"
    help = "Manages authorizations for archive auditors"
    property = "WSARCHIVEAUDITORS"


COMMANDS: list[type[Command]] = [WSAdminsCommand, WSAuditorsCommand, WSArchiveAuditorsCommand]
