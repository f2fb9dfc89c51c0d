"""Server and client commands: ``serve``, ``signdocument``, ``authorizedclients``, ``setuserpassword``.

* ``serve`` runs the HTTPS server (:mod:`signpeer_core.server`).
* ``signdocument`` is a REST client with the options of SignServer's
  ``signclient signdocument`` (``-workername``, ``-data``, ``-infile``, ...).
* ``authorizedclients`` manages the rules of ``AUTHTYPE=CLIENTCERT`` workers with SignServer's
  syntax; ``setuserpassword`` stores a salted scrypt hash for ``AUTHTYPE=USERNAME`` workers.
  Both write the worker configuration (audited); like every configuration change they take
  effect on ``signpeer reload``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from signpeer_core import clientcas
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.errors import BadRequestError, ConfigurationError, NotFoundError, ServiceUnavailableError
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
                                 workers=args.workers, database_url=args.database_url, node_id=args.node_id)
        if not (settings.home / "signpeer.db").exists() and settings.database.startswith("sqlite:"):
            raise ConfigurationError(f"no signpeer data directory at {settings.home}; create one with signpeer init")
        return serve(settings, http=args.http)


class SignDocumentCommand(Command):
    name = "signdocument"
    help = "sign data with a worker of a running server (REST client)"
    description = (
        "Send data to a worker's REST process endpoint and write the result (signature, CMS, ...). "
        "Options as SignServer's signclient signdocument. Exit status 0 only on success."
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("-workername", help="name of the worker")
        who.add_argument("-workerid", help="id of the worker")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("-data", help="the data to sign, as text")
        what.add_argument("-infile", help="file with the data to sign ('-' for stdin)")
        parser.add_argument("-outfile", help="where to write the result (default stdout)")
        parser.add_argument("-clientside", action="store_true",
                            help="hash the data here and send only the hash (a CMSSigner with CLIENTSIDEHASHING or "
                                 "ALLOW_CLIENTSIDEHASHING_OVERRIDE answers a detached signature); a file is hashed "
                                 "as it is read, never held in memory")
        parser.add_argument("-digestalgorithm", default="SHA-256",
                            help="digest of -clientside: SHA-256 (default), SHA-384, SHA-512, SHA-224, SHA-1")
        parser.add_argument("-host", help="server host (default: the running server, else settings host)")
        parser.add_argument("-port", type=int, help="server port (default: the running server, else settings port)")
        parser.add_argument("-username", help="user name for HTTP Basic authentication")
        parser.add_argument("-password", help="password (prompted for when -username is given without it)")
        parser.add_argument("-metadata", action="append", default=[], metavar="KEY=VALUE",
                            help="request metadata (repeatable)")
        parser.add_argument("--cacert", "-truststore", dest="cacert",
                            help="CA certificate(s) trusted for the server, PEM (default <home>/tls/ca.pem if it exists)")
        parser.add_argument("--cert", "-clientcert", dest="cert", help="TLS client certificate, PEM")
        parser.add_argument("--key", "-clientkey", dest="key",
                            help="private key of the client certificate, PEM (default: in --cert)")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (default 60)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.httpclient import HttpClient
        from signpeer_core.server import running_server, url_for
        from signpeer_core.settings import load_settings

        settings = load_settings(ctx.home)
        metadata: dict[str, str] = {}
        for item in args.metadata:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise BadRequestError(f"-metadata '{item}' must be KEY=VALUE")
            metadata[key] = value
        if args.clientside:
            payload = _client_side_hash(args, metadata)
        elif args.data is not None:
            payload = args.data.encode()
        elif args.infile == "-":
            payload = sys.stdin.buffer.read()
        else:
            try:
                payload = Path(args.infile).read_bytes()
            except OSError as exc:
                raise BadRequestError(f"cannot read -infile {args.infile}: {exc.strerror}") from None
        password = args.password
        if args.username and password is None:
            if not sys.stdin.isatty():
                raise BadRequestError("-password is required when stdin is not a terminal")
            password = getpass.getpass(f"Password for {args.username}: ")

        if args.host or args.port:
            url = url_for(args.host or settings.host, args.port or settings.port)
        else:
            info = running_server(settings)
            url = info["url"] if info else url_for(settings.host, settings.port)
        cacert = Path(args.cacert) if args.cacert else settings.home / "tls" / "ca.pem"
        if args.cacert and not cacert.exists():
            raise BadRequestError(f"--cacert {cacert} does not exist")
        worker = args.workername or args.workerid
        auth = (args.username, password or "") if args.username else None
        body = {"data": base64.b64encode(payload).decode(), "encoding": "BASE64", "metaData": metadata}
        with HttpClient(url, cafile=cacert if cacert.exists() else None, cert=args.cert, key=args.key,
                        timeout=args.timeout, max_connections=1,
                        headers={"X-Keyfactor-Requested-With": "signpeer-signdocument"}) as client:
            answer = client.json("POST", f"/signserver/rest/v1/workers/{worker}/process", json=body, auth=auth)
        try:
            result = base64.b64decode(answer["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ServiceUnavailableError("the server's answer has no valid base64 \"data\"") from None
        if args.outfile:
            Path(args.outfile).write_bytes(result)
        else:
            out = getattr(ctx.stdout, "buffer", None)
            if out is None:
                ctx.stdout.write(result.decode("latin-1"))
            else:
                ctx.stdout.flush()
                out.write(result)
                out.flush()
        return 0


def _client_side_hash(args: argparse.Namespace, metadata: dict[str, str]) -> bytes:
    """SignServer's ``signclient -clientside``: the digest of the data, streamed from a file or stdin
    (the document is never in memory whole), with the request options that announce it."""
    import hashlib

    from signpeer_core.requestoptions import (
        CLIENTSIDE_HASHDIGESTALGORITHM,
        DIGESTS,
        USING_CLIENTSUPPLIED_HASH,
        digest_name,
    )

    try:
        name = digest_name(args.digestalgorithm)
    except KeyError:
        raise BadRequestError(f"-digestalgorithm '{args.digestalgorithm}' is not one of SHA-1, SHA-224, SHA-256, "
                              "SHA-384, SHA-512") from None
    digest = hashlib.new(DIGESTS[name][0])
    if args.data is not None:
        digest.update(args.data.encode())
    else:
        try:
            source = sys.stdin.buffer if args.infile == "-" else open(args.infile, "rb")
        except OSError as exc:
            raise BadRequestError(f"cannot read -infile {args.infile}: {exc.strerror}") from None
        try:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
        finally:
            if source is not sys.stdin.buffer:
                source.close()
    metadata[USING_CLIENTSUPPLIED_HASH] = "true"
    metadata[CLIENTSIDE_HASHDIGESTALGORITHM] = f"SHA-{name[3:]}" if name != "SHA1" else "SHA-1"
    return digest.digest()


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
