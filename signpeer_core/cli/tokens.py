"""Crypto token, key and certificate commands (SignServer AdminCLI syntax): token activation,
``generatekey``, ``testkey``, ``removekey``, ``generatecertreq``, signer certificate uploads and
``importcertificatechain``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
import time
from typing import Any

from signpeer_core.admin import WorkerAdmin
from signpeer_core.cli.base import FAILURE_EXIT, Command, CommandContext
from signpeer_core.cli.files import read_file, write_file
from signpeer_core.cli.workers import worker_admin
from signpeer_core.errors import BadRequestError, ServiceUnavailableError
from signpeer_core.keys import load_certificates
from signpeer_core.names import format_dn
from signpeer_core.server import call_server, running_server


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
        ctx.print(f"Trying to activate crypto token of worker with id : {wid}")
        if server is not None:
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{wid}/activate",
                                {"authCode": code})
            ctx.print("Activation of worker was successful")
            ctx.print(f"(in the running server, pid {reply.get('pid', server['pid'])}; "
                      f"worker status: {reply.get('status', 'unknown')})")
            _report_where_active(ctx, admin, wid)
            return 0
        admin.activate(wid, code)
        ctx.print("Activation of worker was successful")
        ctx.print("The authentication code is correct.")
        ctx.print("No server is running, so the activation lasts only for this command. A server activates "
                  "the token by itself when its password/PIN is configured (KEYSTOREPASSWORD, PIN); otherwise "
                  "run this command again while signpeer serve runs.")
        return 0


def _report_where_active(ctx: CommandContext, admin: WorkerAdmin, wid: int, timeout: float = 5.0) -> None:
    """Per server process of every node, whether the token is active there now (the node registry):
    this node's processes follow the activation at once; other nodes keep their own."""
    from signpeer_core.storage.nodes import APPLIED

    owner = admin.worker_id(admin.token_name(admin.loaded_worker(wid)))
    store = admin.services.store
    node = ctx.settings.node_id
    woken = threading.Event()
    stop = store.database.listen(APPLIED, lambda payload: woken.set())
    try:
        store.database.listener_ready(timeout)
        deadline = time.monotonic() + timeout
        while True:
            woken.clear()
            live = store.nodes.live()
            pending = [p for p in live if p.node == node and owner not in p.active_token_ids]
            if not pending or time.monotonic() >= deadline:
                break
            woken.wait(min(0.5, max(0.0, deadline - time.monotonic())))
    finally:
        stop()
    for p in live:
        where = "active" if owner in p.active_token_ids else "NOT active"
        hint = "" if p.node == node or owner in p.active_token_ids else " (another node: activate it there)"
        ctx.print(f"  {where:10} node {p.node} process {p.pid} on {p.host} ({p.address}){hint}")


def key_server(ctx: CommandContext, admin: WorkerAdmin, worker: str) -> tuple[int, dict[str, Any]] | None:
    """``(worker id, server.json)`` when a key operation must run in the running server: this
    process's token is not active (its PIN/password is not stored, so only the server holds the
    activation). None: run here (the token is active locally, or no server runs and the local
    attempt then says what to do)."""
    wid = admin.worker_id(worker)
    _, token = admin.token(wid, active=False)
    if token.is_active:
        return None
    server = running_server(ctx.settings)
    return None if server is None else (wid, server)


def _in_server(ctx: CommandContext, reply: dict[str, Any]) -> None:
    ctx.print(f"(in the running server, pid {reply.get('pid', 'unknown')}, which holds the activated token)")


class ActivateSignTokenCommand(ActivateCryptoTokenCommand):
    name = "activatesigntoken"
    help = "the deprecated name of activatecryptotoken (SignServer keeps it for old scripts)"


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
                   "-keyspec 2048 -alias signer00002 ; signpeer generatekey 2 -keyalg ECDSA -keyspec secp256r1. "
                   "When the token is not active here (a PIN that is never stored) and a server runs, the key is "
                   "generated by the server, which holds the activation.")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("-keyalg", "--keyalg", dest="keyalg", help="RSA, ECDSA or Ed25519")
        parser.add_argument("-keyspec", "--keyspec", dest="keyspec", help="e.g. 2048, 2048exp65537, secp256r1")
        parser.add_argument("-alias", "--alias", dest="alias", help="alias of the new key")
        parser.add_argument("-create", "--create", dest="create", action="store_true",
                            help="create the keystore first when it does not exist (protected by KEYSTOREPASSWORD)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        if args.create and admin.create_keystore(args.worker):
            ctx.print("Created an empty keystore")
        remote = key_server(ctx, admin, args.worker)
        if remote is not None:
            body = {k: v for k, v in (("alias", args.alias), ("keyAlg", args.keyalg), ("keySpec", args.keyspec))
                    if v is not None}
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{remote[0]}/keys", body)
            ctx.print(f"Created key : {reply.get('alias')}")
            _in_server(ctx, reply)
            return 0
        alias = admin.generate_key(args.worker, args.alias, args.keyalg, args.keyspec)
        ctx.print(f"Created key : {alias}")
        return 0


class TestKeyCommand(Command):
    name = "testkey"
    help = "sign and verify a test message with a key (default DEFAULTKEY), or all keys"
    description = ("Exit status 254 when a key fails. Runs in the running server when the token is active only "
                   "there. Example: signpeer testkey CMSSigner all -v")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")
        parser.add_argument("alias", nargs="?", help="key alias, or all (default: DEFAULTKEY)")
        parser.add_argument("-v", "--verbose", action="store_true", help="also show the key's certificate")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        remote = key_server(ctx, admin, args.worker)
        if remote is not None:
            body = {} if args.alias is None else {"alias": args.alias}
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{remote[0]}/keys/test", body)
            rows = reply.get("results") or []
            if not rows:
                ctx.print("The crypto token has no keys.")
            for row in rows:
                ctx.print(row.get("line", ""))
                if args.verbose and row.get("certificate"):
                    ctx.print(f"    Certificate: {row['certificate']}")
            _in_server(ctx, reply)
            return 0 if all(row.get("success") for row in rows) else FAILURE_EXIT
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
        return 0 if all(r.success for r in results) else FAILURE_EXIT


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
                return FAILURE_EXIT
        admin.remove_key(args.worker, args.alias)
        ctx.print("Key removal: SUCCESS")
        return 0


class RetireKeysCommand(Command):
    name = "retirekeys"
    help = "remove superseded keys the worker's SUPERSEDEDKEYS_GRACEPERIOD / SUPERSEDEDKEYS_KEEP retire"
    description = ("Renewal supersedes the old DEFAULTKEY (recorded in SUPERSEDEDKEYS); this removes those past "
                   "the grace period and beyond the newest SUPERSEDEDKEYS_KEEP (also done after each renewal "
                   "step). Example: signpeer retirekeys CMSSigner")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        removed = admin.retire_superseded_keys(admin.worker_id(args.worker))
        ctx.print(f"Retired {len(removed)} superseded key(s)" + (f": {', '.join(removed)}" if removed else ""))
        return 0


class GenerateCertReqCommand(Command):
    name = "generatecertreq"
    help = "write a PKCS#10 certificate request for a worker's key"
    description = ("For DEFAULTKEY unless -alias or -nextkey (NEXTCERTSIGNKEY). Example: signpeer "
                   "generatecertreq CMSSigner \"CN=CMS Signer,O=Example,C=SE\" SHA256WithECDSA /tmp/req.pem -nextkey. "
                   "Made by the running server when the token is active only there; the file is written here.")

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
        admin = worker_admin(ctx)
        remote = key_server(ctx, admin, args.worker)
        if remote is not None:
            body: dict[str, Any] = {"subjectDN": args.dn, "signatureAlgorithm": args.sigalg,
                                    "nextKey": bool(args.nextkey), "explicitEcc": bool(args.explicitecc)}
            if args.alias:
                body["alias"] = args.alias
            reply = call_server(ctx.settings, "POST", f"/signserver/rest/v1/workers/{remote[0]}/certreq", body)
            pem = reply.get("pem")
            if not isinstance(pem, str) or "CERTIFICATE REQUEST" not in pem:
                raise ServiceUnavailableError("the server's answer holds no PEM certificate request")
            write_file(args.file, pem.encode())
            ctx.print(f"PKCS10 Request successfully written to file {args.file}")
            _in_server(ctx, reply)
            return 0
        result = admin.generate_csr(args.worker, args.dn, args.sigalg, alias=args.alias,
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
