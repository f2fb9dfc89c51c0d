"""``signpeer querytokenentries``: the key entries of a crypto token (SignServer's syntax).

With the token active in this process (its password/PIN configured) the token is read here;
otherwise, with a server running, the server's activated token is asked
(``POST …/keys/entries``, :mod:`signpeer_core.keyadmin`), as for ``generatekey``.
"""

from __future__ import annotations

import argparse
from typing import Any

from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.cli.criteria import criterion_type, non_negative, positive
from signpeer_core.cli.tokens import key_server
from signpeer_core.cli.workers import worker_admin
from signpeer_core.server import call_server

#: The fields SignServer lets ``-criteria`` name for token entries, and its operators for them.
FIELDS = ("alias",)
OPERATORS = ("EQ", "NEQ", "LIKE")
INDENT = "   "


class QueryTokenEntriesCommand(Command):
    name = "querytokenentries"
    help = "list the key entries of a crypto token, with -criteria filters (SignServer's syntax)"
    description = ('-criteria "alias EQ|NEQ|LIKE <value>" (repeatable, ANDed; LIKE takes % and _), -from <index> '
                   "(0-based), -limit <n> (default: all), -v for each entry's type, key and certificate chain. "
                   'Example: signpeer querytokenentries -token CryptoTokenP11 -criteria "alias LIKE sign%" -v')

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-token", required=True, help="worker id or name of the crypto token")
        parser.add_argument("-criteria", action="append", default=[], type=criterion_type(FIELDS, OPERATORS),
                            help='"alias <EQ|NEQ|LIKE> <value>" (repeatable)')
        parser.add_argument("-from", dest="start", type=non_negative, default=0, help="first index (0-based)")
        parser.add_argument("-limit", type=positive, help="at most this many entries (default: all)")
        parser.add_argument("-v", dest="verbose", action="store_true", help="type, key and certificate chain")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        remote = key_server(ctx, admin, args.token)
        if remote is not None:
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{remote[0]}/keys/entries", {})
            entries: list[dict[str, Any]] = list(reply.get("entries") or [])
        else:
            from signpeer_core.keyadmin import token_entries

            entries = token_entries(admin.token(args.token)[1])
        matching = [e for e in entries if all(c.matches(str(e.get(c.field))) for c in args.criteria)]
        end = len(matching) if args.limit is None else args.start + args.limit
        shown = matching[args.start:end]
        for i, entry in enumerate(shown, start=args.start):
            ctx.print(f"{i}: {entry['alias']}")
            if args.verbose:
                ctx.print(f"{INDENT}Type: {entry.get('type', 'PRIVATEKEY_ENTRY')}")
                ctx.print(f"{INDENT}Key: {entry.get('description', '')}")
                chain = entry.get("chain") or []
                if chain:
                    ctx.print(f"{INDENT}Certificate chain: ")
                    for cert in chain:
                        ctx.print(f"{INDENT}{INDENT}Subject: {cert['subject']}, Issuer: {cert['issuer']}")
                ctx.print("")
        more = len(matching) - end
        ctx.print(f"... {more} more entries exists." if more > 0 else "... no more entries.")
        return 0
