"""Server and client commands: ``serve``, ``signdocument``, ``authorizedclients``, ``setuserpassword``.

* ``serve`` runs the HTTPS server (:mod:`signpeer_core.server`).
* ``signdocument`` (:mod:`.signdocument`) is a client with the options of SignServer's
  ``signclient signdocument`` (``-workername``, ``-data``, ``-infile``, ``-protocol``, ...).
* ``authorizedclients`` manages the rules of ``AUTHTYPE=CLIENTCERT`` workers with SignServer's
  syntax; ``setuserpassword`` stores a salted scrypt hash for ``AUTHTYPE=USERNAME`` workers.
  Both write the worker configuration (audited); like every configuration change they take
  effect on ``signpeer reload``.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from signpeer_core import clientcas
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.cli.signdocument import SignDocumentCommand
from signpeer_core.errors import BadRequestError, ConfigurationError, NotFoundError
from signpeer_core.identifiers import is_number, shorten

if TYPE_CHECKING:
    from signpeer_core.auth import AuthorizedClient
    from signpeer_core.settings import Settings


def _port(value: str) -> int:
    """A TCP port: ASCII digits, 0 to 65535 (argparse's ``int`` takes ``８４４３`` and 70000)."""
    if not is_number(value) or len(value) > 5 or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"'{shorten(value)}' is not a TCP port; use 1 to 65535, or 0 for a free one")
    return int(value)


def _count(value: str) -> int:
    if not is_number(value) or len(value) > 4 or not 1 <= int(value) <= 1024:
        raise argparse.ArgumentTypeError(f"'{shorten(value)}' is not a number of processes from 1 to 1024")
    return int(value)


class ServeCommand(Command):
    name = "serve"
    help = "run the HTTPS signing server"
    description = (
        "Run the signing server (REST API) with TLS. Client certificates are requested but not required; "
        "workers with AUTHTYPE=CLIENTCERT and the admin endpoints decide. Defaults come from signpeer.toml "
        "and SIGNPEER_* variables; the TLS files default to what signpeer init wrote under <home>/tls/."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=_port, help="port (default 8443; 0 picks a free one, see run/server.json)")
        parser.add_argument("--certfile", help="server certificate, PEM (default <home>/tls/server.pem)")
        parser.add_argument("--keyfile", help="server private key, PEM (default <home>/tls/server-key.pem)")
        parser.add_argument("--client-cafile", action="append", default=[], dest="client_cafiles",
                            help="CA certificates trusted for client certificates (repeatable; "
                                 "default <home>/tls/client-ca.pem)")
        parser.add_argument("--workers", type=_count, help="number of server processes (default 1)")
        parser.add_argument("--cpu-affinity", dest="cpu_affinity", metavar="off|auto|CPUS",
                            help="hold each server process on one CPU: auto (process i on the i-th CPU the server "
                                 "may use) or a CPU list such as 0 or 0-1 (default: cpu_affinity of signpeer.toml, "
                                 "else off); see docs/performance.md")
        parser.add_argument("--http", choices=["httptools", "h11"], default="httptools",
                            help="HTTP/1.1 implementation (default httptools)")
        parser.add_argument("--database-url", help="the database (default: database_url of signpeer.toml, else "
                                                   "signpeer.db in the data directory); postgresql://... for a "
                                                   "cluster (docs/cluster.md)")
        parser.add_argument("--node", dest="node_id", help="this node's id (default: node_id of signpeer.toml, "
                                                           "else the host name)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.server import serve
        from signpeer_core.settings import load_settings

        if args.workers is not None and args.workers < 1:
            raise BadRequestError("--workers must be at least 1")
        settings = load_settings(ctx.home, host=args.host, port=args.port, certfile=args.certfile,
                                 keyfile=args.keyfile, client_cafiles=tuple(args.client_cafiles),
                                 workers=args.workers, database_url=args.database_url, node_id=args.node_id,
                                 cpu_affinity=args.cpu_affinity)
        if not (settings.home / "signpeer.db").exists() and settings.database.startswith("sqlite:"):
            raise ConfigurationError(f"no signpeer data directory at {settings.home}; create one with signpeer init")
        return serve(settings, http=args.http)


class AuthorizedClientsCommand(Command):
    name = "authorizedclients"
    help = "list, add or remove the authorized clients of an AUTHTYPE=CLIENTCERT worker"
    description = (
        "SignServer syntax:\n"
        "  authorizedclients -worker <name|id> -list\n"
        "  authorizedclients -worker <name|id> <-add|-remove> -matchSubjectWithType <TYPE> "
        "-matchSubjectWithValue <v> [-matchIssuerWithType ISSUER_DN_BCSTYLE] -matchIssuerWithValue <issuer DN> "
        "[-description <text>]\n"
        "  authorizedclients -worker <name|id> <-add|-remove> -matchSubjectWithType <TYPE> "
        "[-matchIssuerWithType ISSUER_DN_BCSTYLE] [-description <text>] -cert <PEM file>\n"
        "Rules are stored in the worker property AUTHORIZED_CLIENTS; run signpeer reload afterwards."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.add_argument("-worker", required=True, help="worker name or id")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("-list", action="store_true", help="list the rules")
        action.add_argument("-add", action="store_true", help="add a rule")
        action.add_argument("-remove", action="store_true", help="remove a rule")
        parser.add_argument("-matchSubjectWithType", dest="subject_type", help="e.g. SUBJECT_RDN_CN, CERTIFICATE_SERIALNO")
        parser.add_argument("-matchSubjectWithValue", dest="subject_value")
        parser.add_argument("-matchIssuerWithType", dest="issuer_type", default="ISSUER_DN_BCSTYLE")
        parser.add_argument("-matchIssuerWithValue", dest="issuer_value", help="issuer DN, e.g. 'CN=Dev CA,O=Example'")
        parser.add_argument("-description", default="")
        parser.add_argument("-cert", help="take subject value and issuer from this certificate (PEM or DER)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.admin import WorkerAdmin
        from signpeer_core.auth import (
            AUTHORIZED_CLIENTS_PROPERTY,
            AuthorizedClient,
            parse_authorized_clients,
            serialize_authorized_clients,
        )
        from signpeer_core.keys import load_certificates
        from signpeer_core.storage import Admin

        admin = WorkerAdmin(ctx.services(load=False), Admin.cli())
        config = admin.worker_config(args.worker)
        rules = parse_authorized_clients(config.get_str(AUTHORIZED_CLIENTS_PROPERTY))
        if args.list:
            if not rules:
                ctx.print(f"No authorized clients for worker {config.name}")
            for r in rules:
                ctx.print(f"  SUBJECT: {r.matchSubjectWithType}: {r.matchSubjectWithValue} | "
                          f"ISSUER: {r.matchIssuerWithType}: {r.matchIssuerWithValue}"
                          + (f" | DESCRIPTION: {r.description}" if r.description else "")
                          + (f" | ISSUER KEY: {r.issuerKeyId}" if r.issuerKeyId else " | ISSUER KEY: not bound"))
            return 0
        if not args.subject_type:
            raise BadRequestError("-matchSubjectWithType is required with -add/-remove")
        if args.cert:
            if args.subject_value or args.issuer_value:
                raise BadRequestError("give either -cert or -matchSubjectWithValue/-matchIssuerWithValue, not both")
            try:
                data = Path(args.cert).read_bytes()
            except OSError as exc:
                raise BadRequestError(f"cannot read -cert {args.cert}: {exc.strerror}") from None
            rule = AuthorizedClient.for_certificate(load_certificates(data)[0], args.subject_type, args.issuer_type,
                                                    args.description)
        else:
            if not args.subject_value or not args.issuer_value:
                raise BadRequestError("-matchSubjectWithValue and -matchIssuerWithValue are required "
                                      "(or give -cert <file>)")
            rule = AuthorizedClient.create(args.subject_type, args.subject_value, args.issuer_value,
                                           args.issuer_type, args.description)
        rule = bind_issuer(rule, ctx.settings)
        existing = [r for r in rules if r.key() == rule.key()]
        if args.add:
            if existing:
                ctx.print("Rule already exists; nothing changed")
                return 0
            rules.append(rule)
        else:
            if not existing:
                raise NotFoundError("no such rule; list the rules with -list")
            rules = [r for r in rules if r.key() != rule.key()]
        admin.update_worker(config.worker_id, {AUTHORIZED_CLIENTS_PROPERTY: serialize_authorized_clients(rules)})
        ctx.print(f"Rule {'added' if args.add else 'removed'}. Run signpeer reload {config.name} to apply it.")
        return 0


class SetUserPasswordCommand(Command):
    name = "setuserpassword"
    help = "set the password of a user of an AUTHTYPE=USERNAME worker (stored as a salted scrypt hash)"
    description = (
        "Store USER.<USERNAME> = scrypt$N$r$p$<salt>$<hash> in the worker's configuration. The password is "
        "prompted for (twice) when left out, or read from one line of stdin when stdin is not a terminal. "
        "Run signpeer reload afterwards. Remove a user with signpeer removeproperty <worker> USER.<USERNAME>."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker name or id")
        parser.add_argument("username")
        parser.add_argument("password", nargs="?", help="the password (prompted for when left out)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.admin import WorkerAdmin
        from signpeer_core.auth import hash_password
        from signpeer_core.storage import Admin

        name = args.username.strip()
        if not name or any(c in name for c in ":= \t"):
            raise BadRequestError(f"user name '{args.username}' must be non-empty without ':', '=' or spaces")
        password = args.password
        if password is None:
            if sys.stdin.isatty():
                password = getpass.getpass(f"Password for {name}: ")
                if getpass.getpass("Repeat the password: ") != password:
                    raise BadRequestError("the passwords differ; nothing changed")
            else:
                password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise BadRequestError("the password must not be empty")
        admin = WorkerAdmin(ctx.services(load=False), Admin.cli())
        wid = admin.worker_id(args.worker)
        admin.update_worker(wid, {f"USER.{name.upper()}": hash_password(password)})
        ctx.print(f"Password of user {name} set for worker {args.worker}. Run signpeer reload {args.worker} to apply it.")
        return 0


COMMANDS: list[type[Command]] = [ServeCommand, SignDocumentCommand, AuthorizedClientsCommand, SetUserPasswordCommand]


def bind_issuer(rule: AuthorizedClient, settings: Settings) -> AuthorizedClient:
    """The rule with its issuer bound to the key of the client CA trusted now (clientcas.py), as
    every command that writes an authorized client does."""
    trusted = clientcas.load(settings.tls_client_cafiles)
    return dataclasses.replace(rule, issuerKeyId=trusted.key_id_for_issuer(rule.matchIssuerWithValue))
