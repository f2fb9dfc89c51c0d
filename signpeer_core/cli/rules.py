"""``wsadmins``, ``wsauditors``, ``wsarchiveauditors``: SignServer's client-rule commands.

All four rule commands of SignServer (these three and the peer connector's ``wspeersystems``)
share one syntax, one set of messages and one storage (spec §5.3), so they share this code:
:class:`ClientRulesCommand` is parametrised by the global property it edits. The rule
operations themselves are the administration layer's
(:class:`~signpeer_core.administration.global_properties.GlobalProperties`), which the Admin
Web and ``wspeersystems`` use as well.

Syntax (GNU-style single-dash options, as in SignServer)::

    signpeer wsadmins -add -certserialno <serial hex> -issuerdn <issuer DN>
    signpeer wsadmins -add -cert <PEM or DER file>
    signpeer wsadmins -remove -certserialno <serial hex> -issuerdn <issuer DN>
    signpeer wsadmins -list

Messages and exit codes are SignServer's (0; -1 for bad arguments, printed without a prefix).
Changes are published to ``GLOB.<PROPERTY>``: the value, its audit event ``SET_GLOBAL_PROPERTY``
and the configuration generation bump in one transaction, so every running server process picks
the rule up within its reload poll interval: an administrator who adds a rule expects it to work
without a separate ``reload``.

One deliberate difference from SignServer: ``-remove -cert <file>`` removes the certificate's
rule (SignServer's shared code silently removes nothing and prints ``No such rule``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar

from signpeer_core.audit import Admin
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.clientrules import ClientRule, describe_rule, parse_serial, rule_from_certificate_file
from signpeer_core.errors import BadRequestError

#: SignServer's CLI return codes: 0 success, -1 bad arguments (the shell sees 255).
RETURN_INVALID_ARGUMENTS = -1


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
            for listed in admin.current_rules(self.property):
                ctx.print(describe_rule(listed))
            return 0
        if operation == "add":
            changed = admin.add_rule(self.property, rule)
            ctx.print("Rule added" if changed else "Rule already exists")
        else:
            changed = admin.remove_rule(self.property, rule)
            if changed:
                ctx.print("Rule removed")
            else:
                ctx.error("No such rule")
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
