"""Worker status and configuration commands (SignServer AdminCLI syntax): ``getstatus``,
``getconfig``, ``getproperty``, ``setproperty``, ``removeproperty``, ``setproperties``,
``dumpproperties``, ``reload``. Every change goes through :class:`signpeer_core.admin.WorkerAdmin`,
which writes the audit records and publishes it.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import TYPE_CHECKING

from signpeer_core.admin import MASK, WorkerAdmin, is_secret_key
from signpeer_core.audit import Admin
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.cli.files import read_file, write_file
from signpeer_core.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from signpeer_core.names import format_dn
from signpeer_core.server import running_server
from signpeer_core.workerproperties import unknown_property_warnings

if TYPE_CHECKING:
    from signpeer_core.workers import Worker

GLOBAL_SCOPES = ("global", "node")
#: Seconds ``reload`` waits for every live server process to apply the new configuration.
DEFAULT_RELOAD_TIMEOUT = 10.0


def worker_admin(ctx: CommandContext) -> WorkerAdmin:
    """The administration layer acting as the CLI user.

    The workers are not loaded up front: reading or changing one worker's configuration touches
    only its rows (a data directory with 10,000 workers took seconds per command otherwise);
    status and key commands load the runtime when they first need it."""
    return WorkerAdmin(ctx.services(load=False), Admin.cli())


def _shown(key: str, value: str) -> str:
    return MASK if is_secret_key(key) else value


def _word(active: bool) -> str:
    """SignServer's words in getstatus: Active / Offline."""
    return "Active" if active else "Offline"


def _kind(worker: Worker | None) -> str:
    """What SignServer's getstatus title calls a worker: Signer, CryptoWorker or Worker."""
    if worker is None:
        return "Worker"
    if worker.worker_type == "CRYPTO_WORKER":
        return "CryptoWorker"
    from signpeer_core.signers import BaseSigner  # CMS and ASN.1 code: imported when a worker is shown

    return "Signer" if isinstance(worker, BaseSigner) else "Worker"




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
            ctx.print(f"Status of {_kind(worker)} with ID {s.worker_id} ({s.name}) is:")
            ctx.print(f"   Worker status : {_word(s.state == 'ACTIVE')}")
            if worker is not None and worker.token is not None:
                ctx.print(f"   Token status  : {_word(worker.token.is_active)}")
            if worker is not None and worker.worker_type != "CRYPTO_WORKER":
                # SignServer's key usage counter; signpeer keeps none (no database write per signature).
                ctx.print("   Signings      : not counted")
            warnings = unknown_property_warnings(ctx.services(), s.worker_id)
            if s.reasons:
                ctx.print("   Errors:")
                for reason in s.reasons:
                    ctx.print(f"      - {reason}")
            if warnings:
                ctx.print("   Warnings:")
                for warning in warnings:
                    ctx.print(f"      - {warning}")
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
        for warning in unknown_property_warnings(ctx.services(), wid):
            if f"property {key} " in warning:
                ctx.print(f"Warning: {warning}")
        ctx.print(f"Run signpeer reload {wid} to make it active.")
        return 0


class SetPropertyFromFileCommand(Command):
    name = "setpropertyfromfile"
    help = "set a property to the base64 of a file's bytes (SignServer's setpropertyfromfile)"
    description = ("As SignServer: the value stored is the file's content in base64. Active after signpeer reload. "
                   "Example: signpeer setpropertyfromfile CMSSigner MYDATA data.bin")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, global or node")
        parser.add_argument("key", help="property name (case-insensitive, stored upper-case)")
        parser.add_argument("file", help="the file whose bytes (base64) become the value")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        value = base64.b64encode(read_file(args.file, "file")).decode("ascii")
        admin = worker_admin(ctx)
        if args.worker.lower() in GLOBAL_SCOPES:
            full = admin.set_global(args.worker, args.key, value)
            scope = "NODE." if args.worker.lower() == "node" else "GLOB."
            ctx.print(f"Setting the global property {full} with data from file with scope {scope}")
        else:
            wid = admin.set_property(args.worker, args.key, value)
            ctx.print(f"Setting the property {args.key.strip().upper()} to data from file for worker {wid}")
        ctx.print("See current configuration with the getconfig command, activate it with the reload command")
        return 0


class GetStatusPropertiesCommand(Command):
    name = "getstatusproperties"
    help = "SignServer's status repository (time source in sync, leap seconds): signpeer keeps none"
    description = ("Prints SignServer's table header. signpeer has no status repository: its time-stamp signer "
                   "reads the local clock, so there are no status properties to list (said on stderr).")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        ctx.print(f"{'Property':<20} {'Updated':<25} {'Expiration':<25} Value")
        ctx.error("signpeer keeps no status repository (SignServer's TIMESOURCE0_INSYNC, LEAPSECOND_*): the "
                  "time-stamp signer reads the local clock, so there are no status properties.")
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
        # SignServer's messages; a property that is not set is not an error (exit 0), as there.
        if args.worker.lower() in GLOBAL_SCOPES:
            ctx.print(f"removing the global property {key} with scope {args.worker.upper()}")
            removed = admin.remove_global(args.worker, args.key)
        else:
            wid = admin.worker_id(args.worker)
            ctx.print(f"Removing the property {key} from worker {wid}")
            removed = admin.remove_property(wid, args.key)
        ctx.print("See current configuration with the getconfig command, activate it with the reload command")
        ctx.print("  Property Removed" if removed else f"  Error, the property {key} doesn't seem to exist")
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
        for wid in result.workers_changed:
            for warning in unknown_property_warnings(ctx.services(), wid):
                ctx.print(f"Warning: {warning}")
        ctx.print("Run signpeer reload all to make the changes active.")
        return 0


class RemoveWorkerCommand(Command):
    name = "removeworker"
    help = "remove all properties of a worker (active after reload)"
    description = ("SignServer's removeworker: deletes the worker's configuration (and an INTERNAL keystore "
                   "kept for it); keys in files and HSMs stay. Example: signpeer removeworker DemoCMSSigner")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id or name")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        admin = worker_admin(ctx)
        config = admin.worker_config(args.worker)
        ctx.print(f"Removing all properties related to worker with ID {config.worker_id}")
        ctx.print("Activate the removal with the reload command")
        admin.remove_worker(config.worker_id)
        for key in sorted(config.as_dict()):
            ctx.print(f"  Property '{key}' removed.")
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
    help = "make stored configuration changes active in every server process of every node"
    description = ("Publishes the stored configuration and returns when every live server process of every node "
                   "has applied it (they are told at once), or after --timeout seconds naming those that have "
                   "not (exit status 1). Example: signpeer reload all ; signpeer reload CMSSigner")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("worker", help="worker id, worker name, or all")
        parser.add_argument("--timeout", type=float, default=DEFAULT_RELOAD_TIMEOUT,
                            help=f"seconds to wait for the server processes (default {DEFAULT_RELOAD_TIMEOUT:g}; "
                                 f"0: do not wait)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.membership import wait_applied

        if args.timeout < 0:
            raise BadRequestError("--timeout must be 0 or more seconds")
        admin = worker_admin(ctx)
        generation = admin.reload(args.worker)
        which = "all workers" if args.worker.lower() == "all" else f"worker {admin.worker_id(args.worker)}"
        ctx.print("SignServer reloaded successfully")
        ctx.print("Current configuration is now activated.")
        ctx.print(f"({which}, configuration generation {generation})")
        store = admin.services.store
        waited = wait_applied(store.database, store.nodes, generation, args.timeout)
        if waited.behind:
            names = "; ".join(f"node {p.node} process {p.pid} on {p.host} (at generation {p.generation})"
                              for p in waited.behind)
            raise ServiceUnavailableError(
                f"{len(waited.behind)} of {len(waited.live)} server process(es) did not apply generation "
                f"{generation} within {args.timeout:g} s: {names}; see their logs, or signpeer nodes")
        if waited.live:
            nodes = len({p.node for p in waited.live})
            ctx.print(f"Applied by {len(waited.live)} server process(es) on {nodes} node(s) in "
                      f"{waited.seconds * 1000:.0f} ms")
        else:
            ctx.print("No server is running; servers load this configuration when they start")
        return 0
