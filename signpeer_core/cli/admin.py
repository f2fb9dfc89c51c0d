"""The administration commands of ``signpeer``, with SignServer's AdminCLI syntax.

``signpeer getstatus brief all`` works as ``bin/signserver getstatus brief all`` does, so existing
scripts keep working; ``--help`` and ``--json`` are additions. Every command goes through
:class:`signpeer_core.admin.WorkerAdmin`, which writes the audit records.

Exit status: 0 on success, 1 when the command failed (the message on stderr says why),
2 for wrong usage (argparse).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from signpeer_core.admin import MASK, WorkerAdmin, is_secret_key
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.errors import (
    BadRequestError,
    NotFoundError,
)
from signpeer_core.keys import load_certificates
from signpeer_core.names import format_dn
from signpeer_core.server import call_server, running_server
from signpeer_core.storage import Admin

GLOBAL_SCOPES = ("global", "node")


def worker_admin(ctx: CommandContext) -> WorkerAdmin:
    return WorkerAdmin(ctx.services(), Admin.cli())


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadRequestError(f"no such {what}: {path}") from None
    except OSError as exc:
        raise BadRequestError(f"cannot read {what} {path}: {exc.strerror}") from None


def write_file(path: str, data: bytes, private: bool = False) -> None:
    p = Path(path)
    try:
        if private:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            p.write_bytes(data)
    except OSError as exc:
        raise BadRequestError(f"cannot write {path}: {exc.strerror}") from None


def _shown(key: str, value: str) -> str:
    return MASK if is_secret_key(key) else value




# -- status and configuration ----------------------------------------------------------------
class GetStatusCommand(Command):
    name = "getstatus"
    help = "show whether workers are ACTIVE or OFFLINE, and why"
    description = ("Worker status as SignServer shows it: 'brief' gives the state and the reasons a worker is "
                   "OFFLINE; 'complete' adds the worker's properties and certificate. Example: "
                   "signpeer getstatus brief all")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("mode", choices=["complete", "brief"], type=str.lower, help="complete or brief")
        parser.add_argument("worker", help="worker id, worker name, or all")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        statuses = admin.statuses(args.worker)
        server = running_server(ctx.settings)
        if args.json:
            out = [{"id": s.worker_id, "name": s.name, "status": s.state, "reasons": s.reasons} for s in statuses]
            if args.mode == "complete":
                for s, entry in zip(statuses, out, strict=True):
                    cfg = admin.worker_config(s.worker_id)
                    entry["properties"] = {k: _shown(k, v) for k, v in sorted(cfg.items())}
            ctx.print(json.dumps(out, indent=2))
            return 0
        for s in statuses:
            worker = ctx.services().runtime.by_id.get(s.worker_id)
            kind = "CryptoWorker" if worker is not None and worker.worker_type == "CRYPTO_WORKER" else "Worker"
            ctx.print(f"Status of {kind} with ID {s.worker_id} ({s.name}) is:")
            ctx.print(f"   Worker status : {s.state}")
            if worker is not None and worker.token is not None:
                ctx.print(f"   Token status  : {'ACTIVE' if worker.token.is_active else 'OFFLINE'}")
            if s.reasons:
                ctx.print("   Errors:")
                for reason in s.reasons:
                    ctx.print(f"      - {reason}")
            if args.mode == "complete":
                cfg = admin.worker_config(s.worker_id)
                ctx.print("   Active properties:")
                for key in sorted(cfg):
                    if key not in ("SIGNERCERT", "SIGNERCERTCHAIN"):
                        ctx.print(f"      {key}={_shown(key, cfg[key])}")
                chain = getattr(worker, "chain", None) or []
                if chain:
                    cert = chain[0]
                    ctx.print(f"   Signer certificate: {format_dn(cert.subject)}")
                    ctx.print(f"      Issuer: {format_dn(cert.issuer)}, serial {cert.serial_number:x}")
                    ctx.print(f"      Valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
            ctx.print("")
        if server is not None:
            ctx.print(f"Note: this is the status as this command sees it; the running server (pid {server['pid']}) "
                      "may have tokens activated by hand. curl its /healthcheck for its view.")
        return 0


class GetConfigCommand(Command):
    name = "getconfig"
    help = "show the stored configuration of a worker or the global configuration"
    description = ("Shows the stored configuration, which is not necessarily the active one until "
                   "signpeer reload. Passwords and PINs are masked (dumpproperties writes them). "
                   "Example: signpeer getconfig CMSSigner")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, or global")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        if args.worker.lower() == "global":
            props = admin.global_config()
            title = "Global configuration:"
        else:
            cfg = admin.worker_config(args.worker)
            props = cfg.as_dict()
            title = f"Configuration of worker with ID {cfg.worker_id} ({cfg.name}):"
        shown = {k: _shown(k, v) for k, v in sorted(props.items())}
        if args.json:
            ctx.print(json.dumps(shown, indent=2))
            return 0
        ctx.print("OBSERVE that this command displays the stored configuration, which becomes active "
                  "after signpeer reload.")
        ctx.print(title)
        for key, value in shown.items():
            ctx.print(f"  {key}={value}")
        if not shown:
            ctx.print("  (no properties)")
        return 0


class GetPropertyCommand(Command):
    name = "getproperty"
    help = "print one property of a worker, or a global/node property"
    description = "Example: signpeer getproperty CMSSigner DEFAULTKEY ; signpeer getproperty global WSADMINS"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, global or node")
        parser.add_argument("key", help="property name (case-insensitive)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        if args.worker.lower() in GLOBAL_SCOPES:
            value = admin.get_global(args.worker, args.key)
            where = f"{args.worker} scope"
        else:
            cfg = admin.worker_config(args.worker)
            value = cfg.get(args.key)
            where = f"worker {cfg.worker_id} ({cfg.name})"
        if value is None:
            raise NotFoundError(f"property {args.key.upper()} is not set for {where}")
        ctx.print(value)
        return 0


class SetPropertyCommand(Command):
    name = "setproperty"
    help = "set a worker property, or a global/node property"
    description = ("Sets a property in the stored configuration; it becomes active after signpeer reload. "
                   "A worker id that does not exist yet creates the worker. "
                   "Examples: signpeer setproperty CMSSigner DEFAULTKEY signer00002 ; "
                   "signpeer setproperty global PEERS_INCOMING_ENABLED true")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, global or node")
        parser.add_argument("key", help="property name (case-insensitive, stored upper-case)")
        parser.add_argument("value", help="the value")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        if args.worker.lower() in GLOBAL_SCOPES:
            full = admin.set_global(args.worker, args.key, args.value)
            ctx.print(f"Setting the global property {full} to {_shown(full, args.value)}")
            ctx.print("Run signpeer reload all to make it active.")
            return 0
        wid = admin.set_property(args.worker, args.key, args.value)
        key = args.key.strip().upper()
        ctx.print(f"Setting the property {key} to {_shown(key, args.value)} for worker {wid}")
        ctx.print(f"Run signpeer reload {wid} to make it active.")
        return 0


class RemovePropertyCommand(Command):
    name = "removeproperty"
    help = "remove a worker property, or a global/node property"
    description = "Example: signpeer removeproperty CMSSigner NEXTCERTSIGNKEY"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, global or node")
        parser.add_argument("key", help="property name (case-insensitive)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        key = args.key.strip().upper()
        if args.worker.lower() in GLOBAL_SCOPES:
            if not admin.remove_global(args.worker, args.key):
                raise NotFoundError(f"global property {key} is not set ({args.worker} scope)")
            ctx.print(f"Property {key} removed ({args.worker} scope)")
            return 0
        wid = admin.worker_id(args.worker)
        if not admin.remove_property(wid, args.key):
            raise NotFoundError(f"property {key} is not set for worker {wid}")
        ctx.print(f"Property {key} removed from worker {wid}")
        ctx.print(f"Run signpeer reload {wid} to make it active.")
        return 0


class SetPropertiesCommand(Command):
    name = "setproperties"
    help = "load a SignServer property file (all or nothing)"
    description = ("Applies a SignServer property file (WORKERGENID<n>., WORKER<id>., ID<id>., NAME<name>., "
                   "GLOB., NODE., a leading - removes) in one transaction: an error changes nothing. "
                   "Example: signpeer setproperties cmssigner.properties")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", help="the property file")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.propertyfile import apply_property_file

        result = apply_property_file(worker_admin(ctx), args.file)
        for line in result.messages:
            ctx.print(line)
        for label, wid in result.created.items():
            ctx.print(f"Created worker {wid} ({label})")
        ctx.print("Run signpeer reload all to make the changes active.")
        return 0


class DumpPropertiesCommand(Command):
    name = "dumpproperties"
    help = "write the configuration as a property file that setproperties loads back"
    description = ("Writes all workers and global properties (all) or one worker to a file (mode 0600: "
                   "it contains keystore passwords). Example: signpeer dumpproperties all backup.properties")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="all, or a worker id or name")
        parser.add_argument("outfile", help="the file to write")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.propertyfile import dump_properties

        text = dump_properties(worker_admin(ctx), args.worker)
        write_file(args.outfile, text.encode("ascii"), private=True)
        ctx.print(f"Properties successfully dumped into file {args.outfile}")
        return 0


class ReloadCommand(Command):
    name = "reload"
    help = "make stored configuration changes active in every server process"
    description = "Example: signpeer reload all ; signpeer reload CMSSigner"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, or all")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        generation = admin.reload(args.worker)
        which = "all workers" if args.worker.lower() == "all" else f"worker {admin.worker_id(args.worker)}"
        ctx.print(f"SignServer reloaded successfully: {which} (configuration generation {generation}); "
                  f"running servers pick it up within {ctx.settings.reload_poll_interval:g} s")
        return 0


# -- crypto tokens --------------------------------------------------------------------------
class ActivateCryptoTokenCommand(Command):
    name = "activatecryptotoken"
    help = "activate a worker's crypto token (in the running server)"
    description = ("With a running server (signpeer serve), the server's token is activated through its "
                   "admin API with <home>/tls/admin.pem. Without one, the code is checked against the token; "
                   "a server activates a token by itself only when its password/PIN is configured. "
                   "The code is asked for when left out. Example: signpeer activatecryptotoken CryptoTokenP12")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("code", nargs="?", help="authentication code (password or PIN); prompted when left out")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        wid = admin.worker_id(args.worker)
        code = args.code
        if code is None:
            code = getpass.getpass("Enter authentication code: ")
        server = running_server(ctx.settings)
        if server is not None:
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{wid}/activate",
                                {"authCode": code})
            ctx.print(f"Activation of worker {wid} was successful (server pid {reply.get('pid', server['pid'])}); "
                      f"worker status: {reply.get('status', 'unknown')}")
            return 0
        admin.activate(wid, code)
        ctx.print(f"Activation of worker {wid} was successful: the authentication code is correct.")
        ctx.print("No server is running, so the activation lasts only for this command. A server activates "
                  "the token by itself when its password/PIN is configured (KEYSTOREPASSWORD, PIN); otherwise "
                  "run this command again while signpeer serve runs.")
        return 0


class DeactivateCryptoTokenCommand(Command):
    name = "deactivatecryptotoken"
    help = "deactivate a worker's crypto token (in the running server)"
    description = "Example: signpeer deactivatecryptotoken CryptoTokenP12"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        wid = admin.worker_id(args.worker)
        server = running_server(ctx.settings)
        if server is not None:
            call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{wid}/deactivate", {})
            ctx.print(f"Deactivation of worker {wid} was successful")
            return 0
        admin.deactivate(wid)
        ctx.print(f"Deactivation of worker {wid} was successful (no server is running; a server that starts "
                  "later activates the token again if its password/PIN is configured)")
        return 0


class GenerateKeyCommand(Command):
    name = "generatekey"
    help = "generate a key pair in a worker's crypto token"
    description = ("Left-out alias: the next in sequence after DEFAULTKEY (signer00001 -> signer00002); "
                   "left-out -keyalg/-keyspec: the worker's KEYALG/KEYSPEC (default RSA 2048). RSA key specs may "
                   "carry a public exponent (2048exp65537). Examples: signpeer generatekey CMSSigner -keyalg RSA "
                   "-keyspec 2048 -alias signer00002 ; signpeer generatekey 2 -keyalg ECDSA -keyspec secp256r1")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("-keyalg", "--keyalg", dest="keyalg", help="RSA, ECDSA or Ed25519")
        parser.add_argument("-keyspec", "--keyspec", dest="keyspec", help="e.g. 2048, 2048exp65537, secp256r1")
        parser.add_argument("-alias", "--alias", dest="alias", help="alias of the new key")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        alias = worker_admin(ctx).generate_key(args.worker, args.alias, args.keyalg, args.keyspec)
        ctx.print(f"Created key : {alias}")
        return 0


class TestKeyCommand(Command):
    name = "testkey"
    help = "sign and verify a test message with a key (default DEFAULTKEY), or all keys"
    description = "Exit status 1 when a key fails. Example: signpeer testkey CMSSigner all -v"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("alias", nargs="?", help="key alias, or all (default: DEFAULTKEY)")
        parser.add_argument("-v", "--verbose", action="store_true", help="also show the key's certificate")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        results = admin.test_key(args.worker, args.alias)
        if not results:
            ctx.print("The crypto token has no keys.")
            return 0
        token = admin.token(args.worker)[1] if args.verbose else None
        for r in results:
            ctx.print(r.line())
            if token is not None:
                chain = token.certificate_chain(r.alias)
                if chain:
                    ctx.print(f"    Certificate: {format_dn(chain[0].subject)} (issuer {format_dn(chain[0].issuer)})")
        return 0 if all(r.success for r in results) else 1


class RemoveKeyCommand(Command):
    name = "removekey"
    help = "delete a key pair from a worker's crypto token"
    description = "Asks for confirmation unless -noask. Example: signpeer removekey CMSSigner -alias signer00001 -noask"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("-alias", "--alias", dest="alias", required=True, help="alias of the key to delete")
        parser.add_argument("-noask", "--noask", action="store_true", help="do not ask for confirmation")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        admin.token(args.worker)  # a clear error for an unknown worker or an offline token before asking
        if not args.noask:
            if not sys.stdin.isatty():
                raise BadRequestError("not asking for confirmation without a terminal; add -noask")
            answer = input(f"Remove key '{args.alias}' from the crypto token of {args.worker}? "
                           "This cannot be undone [yes/NO]: ")
            if answer.strip().lower() not in ("y", "yes"):
                ctx.print("Aborted: the key was not removed.")
                return 1
        admin.remove_key(args.worker, args.alias)
        ctx.print("Key removal: SUCCESS")
        return 0


class GenerateCertReqCommand(Command):
    name = "generatecertreq"
    help = "write a PKCS#10 certificate request for a worker's key"
    description = ("For DEFAULTKEY unless -alias or -nextkey (NEXTCERTSIGNKEY). Example: signpeer "
                   "generatecertreq CMSSigner \"CN=CMS Signer,O=Example,C=SE\" SHA256WithECDSA /tmp/req.pem -nextkey")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("dn", help="subject DN, e.g. \"CN=Signer,O=Example,C=SE\"")
        parser.add_argument("sigalg", help="signature algorithm, e.g. SHA256WithRSA, SHA256withECDSA, Ed25519")
        parser.add_argument("file", help="where to write the PEM request")
        parser.add_argument("-explicitecc", "--explicitecc", action="store_true",
                            help="explicit EC parameters (not supported; refused for EC keys)")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("-alias", "--alias", dest="alias", help="the key to make the request for")
        group.add_argument("-nextkey", "--nextkey", dest="nextkey", action="store_true",
                           help="the key in NEXTCERTSIGNKEY")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        result = worker_admin(ctx).generate_csr(args.worker, args.dn, args.sigalg, alias=args.alias,
                                                next_key=args.nextkey, explicit_ecc=args.explicitecc)
        write_file(args.file, result.pem)
        ctx.print(f"PKCS10 Request successfully written to file {args.file}")
        return 0


def _scope(value: str) -> str:
    scope = value.strip().upper()
    if scope not in ("NODE", "GLOB", "GLOBAL"):
        raise argparse.ArgumentTypeError(f"scope must be NODE or GLOB, not '{value}'")
    return "NODE" if scope == "NODE" else "GLOBAL"


class UploadSignerCertificateCommand(Command):
    name = "uploadsignercertificate"
    help = "install a signer certificate (the CA part of the existing chain is kept)"
    description = ("The certificate must be for DEFAULTKEY or NEXTCERTSIGNKEY (which then becomes DEFAULTKEY); "
                   "otherwise nothing changes. Example: signpeer uploadsignercertificate CMSSigner GLOB cert.pem")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("scope", type=_scope, help="GLOB or NODE")
        parser.add_argument("file", help="PEM (or DER) certificate file")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        data = read_file(args.file, "certificate file")
        result = worker_admin(ctx).upload_signer_certificate(args.worker, data, args.scope)
        _report_install(ctx, result)
        return 0


class UploadSignerCertificateChainCommand(Command):
    name = "uploadsignercertificatechain"
    help = "install a signer certificate chain (leaf first)"
    description = ("The leaf must be for DEFAULTKEY or NEXTCERTSIGNKEY (which then becomes DEFAULTKEY); "
                   "otherwise nothing changes. Example: signpeer uploadsignercertificatechain CMSSigner GLOB chain.pem")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("scope", type=_scope, help="GLOB or NODE")
        parser.add_argument("file", help="PEM file, end-entity certificate first, then each issuer")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        data = read_file(args.file, "certificate chain file")
        result = worker_admin(ctx).install_certificate_chain(args.worker, data, scope=args.scope)
        _report_install(ctx, result)
        return 0


def _report_install(ctx: CommandContext, result: Any) -> None:
    leaf = result.chain[0]
    ctx.print(f"Installed certificate '{format_dn(leaf.subject)}' for key {result.alias} "
              f"of worker {result.worker_id} (chain of {len(result.chain)})")
    if result.promoted:
        ctx.print(f"Key {result.alias} (NEXTCERTSIGNKEY) is now DEFAULTKEY")
    ctx.print(f"Run signpeer reload {result.worker_id} to make it active.")


class ImportCertificateChainCommand(Command):
    name = "importcertificatechain"
    help = "store a certificate chain in the crypto token next to a key"
    description = "Example: signpeer importcertificatechain CryptoTokenP12 chain.pem signer00001"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("file", help="PEM file, the key's certificate first")
        parser.add_argument("alias", help="alias of the key")
        parser.add_argument("authcode", nargs="?", help="authentication code, when the token is not active")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        data = read_file(args.file, "certificate chain file")
        worker_admin(ctx).import_certificate_chain(args.worker, data, args.alias, args.authcode)
        ctx.print(f"Imported certificate chain ({len(load_certificates(data))} certificates) for key {args.alias}")
        return 0


# -- plugins and audit log ------------------------------------------------------------------
class PluginsCommand(Command):
    name = "plugins"
    help = "list the loaded plugins, their versions and what each registers"
    description = "Example: signpeer plugins --json"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        registry = ctx.registry
        registry.cli_commands()  # fills in the "commands" each plugin registers
        infos = sorted(registry.infos.values(), key=lambda i: i.name)
        if args.json:
            ctx.print(json.dumps([{"name": i.name, "distribution": i.distribution, "version": i.version,
                                   "registers": i.registers} for i in infos], indent=2))
            return 0
        for info in infos:
            ctx.print(f"{info.name}: {info.distribution} {info.version}")
            for kind, names in sorted(info.registers.items()):
                ctx.print(f"    {kind}: {', '.join(names)}")
        return 0


def _timestamp(value: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an ISO date/time; write e.g. 2025-06-01 or "
                                         "2025-06-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without zone is local time
    return moment.timestamp()


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not '{value}'")
    return n


class AuditLogCommand(Command):
    name = "auditlog"
    help = "show the audit log (newest first), with filters"
    description = ("Each record: time, event (SignServer's names: SET_WORKER_CONFIG, KEYGEN, GENCSR, "
                   "CERTINSTALLED, ...), module, administrator, worker and details. "
                   "Example: signpeer auditlog --event KEYGEN --worker CMSSigner --since 2025-06-01")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--event", help="only this event type, e.g. SET_WORKER_CONFIG")
        parser.add_argument("--worker", help="only this worker (id or name)")
        parser.add_argument("--admin", help="administrator name contains this text")
        parser.add_argument("--since", type=_timestamp, help="from this ISO date/time on")
        parser.add_argument("--until", type=_timestamp, help="up to this ISO date/time")
        parser.add_argument("--limit", type=_positive, default=100, help="at most this many records (default 100)")
        parser.add_argument("--json", action="store_true", help="machine-readable output, details in full")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        services = ctx.services(load=False)
        worker_id = None
        if args.worker:
            worker_id = int(args.worker) if args.worker.isdigit() else \
                WorkerAdmin(services, Admin.cli()).worker_id(args.worker)
        events = services.store.audit_events(event=args.event, worker_id=worker_id, admin=args.admin,
                                             since=args.since, until=args.until, limit=args.limit)
        if args.json:
            ctx.print(json.dumps([{
                "id": e.id, "time": dt.datetime.fromtimestamp(e.time, dt.UTC).isoformat(),
                "event": e.event, "module": e.module, "outcome": e.outcome, "admin": e.admin.name,
                "issuer": e.admin.issuer, "serial": e.admin.serial, "worker_id": e.worker_id,
                "details": e.details} for e in events], indent=2))
            return 0
        for e in events:
            when = dt.datetime.fromtimestamp(e.time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            parts = [f"EVENT: {e.event}", f"MODULE: {e.module}", f"OUTCOME: {e.outcome}",
                     f"ADMINISTRATOR: {e.admin.name}"]
            if e.admin.issuer:
                parts += [f"ISSUER: {e.admin.issuer}", f"SERIAL_NUMBER: {e.admin.serial}"]
            if e.worker_id is not None:
                parts.append(f"WORKER_ID: {e.worker_id}")
            for key, value in e.details.items():
                text = str(value).replace("\n", " ")
                parts.append(f"{key}: {text if len(text) <= 80 else text[:60] + '... (--json for all)'}")
            ctx.print(f"{when} " + "; ".join(parts))
        if not events:
            ctx.print("No audit records match.")
        return 0


from signpeer_core.cli.init import InitCommand  # noqa: E402  (init builds on the helpers above)

COMMANDS: list[type[Command]] = [
    InitCommand,
    GetStatusCommand, GetConfigCommand, GetPropertyCommand, SetPropertyCommand, RemovePropertyCommand,
    SetPropertiesCommand, DumpPropertiesCommand, ReloadCommand,
    ActivateCryptoTokenCommand, DeactivateCryptoTokenCommand,
    GenerateKeyCommand, TestKeyCommand, RemoveKeyCommand, GenerateCertReqCommand,
    UploadSignerCertificateCommand, UploadSignerCertificateChainCommand, ImportCertificateChainCommand,
    PluginsCommand, AuditLogCommand,
]
