"""``signpeer wspeersystems``, ``signpeer peers`` and ``signpeer connector``.

* ``wspeersystems`` is SignServer's command, with its options, messages and exit codes
  (spec §5.3): 0 on success, -1 for bad arguments, -2 when the value is rejected.
* ``peers`` is the CLI twin of the Admin Web's "Incoming Connections": list the peers that
  called (``incoming``), forget one (``clear <id>``), authorize one (``authorize <id>``).
* ``connector`` is the CA side (what EJBCA does): ping, list, renew one, renew all, and
  ``serve-ra`` (the RA loop of one-time keys, from signpeer-onetimecrypto when installed).

Rule changes go through the core's administration layer (``WorkerAdmin.add_rule`` /
``remove_rule``, also used by ``wsadmins`` and the Admin Web): ``GLOB.WSPEERS``, its audit event
SET_GLOBAL_PROPERTY and the configuration generation bump are published in one transaction, so
every running server process applies them within its reload poll interval, without a separate
``signpeer reload``.

``wspeersystems`` keeps SignServer's exact behaviour where ``wsadmins`` deliberately differs:
exit code -1 for bad arguments, a blank line after the list, and ``-remove -cert`` removing
nothing (``No such rule``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signpeer_core.api import (
    KEY_IDS_SUFFIX,
    Admin,
    AuditEvent,
    BadRequestError,
    ClientRule,
    Command,
    CommandContext,
    ConfigurationError,
    IssuingCA,
    NotFoundError,
    SignpeerError,
    describe_rule,
    is_true,
    parse_bound_rules,
    parse_serial,
    rule_from_certificate_file,
)
from signpeer_peerconnector.protocol import PEERS_INCOMING_ENABLED, WSPEERS

if TYPE_CHECKING:
    from signpeer_core.api import Services
    from signpeer_peerconnector.client import PeerClient, RenewalResult

#: SignServer's CLI return codes (CommandLineInterface).
RETURN_SUCCESS = 0
RETURN_INVALID_ARGUMENTS = -1
RETURN_ERROR = -2


def peer_rules(services: Services) -> list[ClientRule]:
    """The Peer System rules as stored (GLOB scope, as wspeersystems writes them)."""
    props = services.store.global_properties()
    return parse_bound_rules(props.get(f"GLOB.{WSPEERS}"), props.get(f"GLOB.{WSPEERS}{KEY_IDS_SUFFIX}"))


def authorize(services: Services, admin: Admin, rule: ClientRule) -> bool:
    """Add a Peer System rule, published (audited, active in every server soon); False when it existed."""
    from signpeer_core.api import WorkerAdmin

    return WorkerAdmin(services, admin).add_rule(WSPEERS, rule)


def unauthorize(services: Services, admin: Admin, rule: ClientRule) -> bool:
    """Remove a Peer System rule, published (audited, active in every server soon); False when there was none."""
    from signpeer_core.api import WorkerAdmin

    return WorkerAdmin(services, admin).remove_rule(WSPEERS, rule)


class WSPeerSystemsCommand(Command):
    name = "wspeersystems"
    help = "Manages authorizations for peer systems"
    description = ("Manages authorizations for peer systems (the Peer System rules in GLOB.WSPEERS).\n"
                   "  wspeersystems -add -certserialno <serial hex> -issuerdn <issuer DN>\n"
                   "  wspeersystems -add -cert <PEM or DER file>\n"
                   "  wspeersystems -remove -certserialno <serial hex> -issuerdn <issuer DN>\n"
                   "  wspeersystems -list")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.add_argument("-add", action="store_true", help="Add a new peer system rule")
        parser.add_argument("-remove", action="store_true", help="Remove a peer system rule")
        parser.add_argument("-list", action="store_true", help="List all peer system rules")
        parser.add_argument("-certserialno", help="Subject certificate serial number (hex)")
        parser.add_argument("-issuerdn", help="Issuer distinguished name")
        parser.add_argument("-cert", help="Certificate file (PEM or DER)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        operation = "add" if args.add else "remove" if args.remove else "list" if args.list else None
        serial: int | None = None
        if args.certserialno is not None:
            try:
                serial = parse_serial(args.certserialno)
            except BadRequestError:
                ctx.error(f"Illegal serial number specified: {args.certserialno}")
                return RETURN_INVALID_ARGUMENTS
        if operation is None:
            ctx.error("Missing operation: -add, -remove or -list")
            return RETURN_INVALID_ARGUMENTS
        if operation != "list":
            if args.cert is not None:
                if serial is not None or args.issuerdn is not None:
                    ctx.error("Can't use the option -cert at the same time as -certserialno and -issuerdn")
                    return RETURN_INVALID_ARGUMENTS
            elif serial is None:
                ctx.error("Missing option: -certserialno")
                return RETURN_INVALID_ARGUMENTS
            elif args.issuerdn is None:
                ctx.error("Missing option: -issuerdn")
                return RETURN_INVALID_ARGUMENTS
        services = ctx.services(load=False)
        if operation == "list":
            lines = ["Authorizations:"] + [describe_rule(r) for r in peer_rules(services)]
            ctx.print("\n".join(lines) + "\n")  # SignServer prints the buffer with println: a blank line ends it
            return RETURN_SUCCESS
        admin = Admin.cli()
        if operation == "add":
            if args.cert is not None:
                try:
                    data = Path(args.cert).read_bytes()
                except OSError as exc:
                    raise BadRequestError(f"cannot read certificate file {args.cert}: {exc.strerror}") from None
                rule = rule_from_certificate_file(data)
            else:
                assert serial is not None
                rule = ClientRule(serial, args.issuerdn)
            if not rule.issuer_dn.strip():
                ctx.error("Illegal issuer DN: it must not be empty")
                return RETURN_ERROR
            ctx.print("Rule added" if authorize(services, admin, rule) else "Rule already exists")
            return RETURN_SUCCESS
        # remove: only serial + issuer; with -cert nothing matches (as SignServer's shared code does)
        if serial is None or args.issuerdn is None:
            ctx.error("No such rule")
            return RETURN_SUCCESS
        if unauthorize(services, admin, ClientRule(serial, args.issuerdn)):
            ctx.print("Rule removed")
        else:
            ctx.error("No such rule")
        return RETURN_SUCCESS


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S%z")


class PeersCommand(Command):
    name = "peers"
    help = "Incoming peer connections: list them, clear one, authorize one"
    description = ("Peers (CAs) that connected to this server's peer endpoint, authorized or not.\n"
                   "  peers incoming          list them (Authorized: Yes when a Peer System rule exists)\n"
                   "  peers clear <id>        forget one row\n"
                   "  peers authorize <id>    add the Peer System rule (WSPEERS) for that certificate")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
        incoming = sub.add_parser("incoming", help="list incoming peer connections")
        incoming.add_argument("--json", action="store_true", help="print JSON")
        sub.add_parser("clear", help="forget one incoming connection").add_argument("id", type=int)
        sub.add_parser("authorize", help="add the Peer System rule for an incoming connection").add_argument(
            "id", type=int)

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_peerconnector.incoming_store import CLEARED, IncomingPeers  # SQLAlchemy: when it runs

        services = ctx.services(load=False)
        store = services.store
        registry = IncomingPeers(store.database)
        if args.action == "incoming":
            rows = registry.all()
            rules = set(peer_rules(services))
            enabled = is_true(store.global_properties().get(f"GLOB.{PEERS_INCOMING_ENABLED}"))
            data = [{"id": r.id, "subject": r.subject, "issuer": r.issuer, "serial": r.serial,
                     "remoteAddress": r.remote_address, "node": r.node, "firstSeen": _when(r.first_seen),
                     "lastSeen": _when(r.last_seen), "count": r.count, "authorized": ClientRule(int(r.serial, 16), r.issuer) in rules} for r in rows]
            if args.json:
                ctx.print(json.dumps({"incomingEnabled": enabled, "incoming": data}, indent=2))
                return 0
            if not enabled:
                ctx.print(f"Incoming peer connections are not allowed (global {PEERS_INCOMING_ENABLED} is not true); "
                          f"allow them with: signpeer setproperty global {PEERS_INCOMING_ENABLED} true")
            if not data:
                ctx.print("No peer has successfully connected to this node.")
                return 0
            header = ("Id", "Remote identity", "Issuer", "Serial", "Remote address", "Node", "First seen", "Last seen",
                      "Count", "Authorized")
            table: list[tuple[str, ...]] = [header, *(
                (str(d["id"]), str(d["subject"]), str(d["issuer"]), str(d["serial"]), str(d["remoteAddress"]),
                 str(d["node"]), str(d["firstSeen"]), str(d["lastSeen"]), str(d["count"]), "Yes" if d["authorized"] else "No")
                for d in data)]
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            for cells in table:
                ctx.print("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
            return 0
        row = registry.get(args.id)
        if row is None:
            raise NotFoundError(f"no incoming connection with id {args.id}; list them with signpeer peers incoming")
        if args.action == "clear":
            event = AuditEvent(CLEARED, "PEERS", Admin.cli(), details={
                "ID": str(row.id), "SUBJECT": row.subject, "ISSUER": row.issuer, "SERIAL": row.serial,
                "REMOTE_ADDRESS": row.remote_address})
            registry.remove(args.id, audit=lambda conn: store.write_audit(conn, [event]))
            ctx.print(f"Cleared incoming connection {args.id} ({row.subject}, {row.remote_address})")
            return 0
        rule = ClientRule(int(row.serial, 16), row.issuer)
        added = authorize(services, Admin.cli(), rule)
        ctx.print(("Rule added" if added else "Rule already exists") + f": {rule.serial_hex:<20} {rule.issuer_dn}")
        if not is_true(store.global_properties().get(f"GLOB.{PEERS_INCOMING_ENABLED}")):
            ctx.print(f"Note: incoming peer connections are still not allowed; run "
                      f"signpeer setproperty global {PEERS_INCOMING_ENABLED} true")
        return 0


# -- connector ---------------------------------------------------------------------------------------
def _load_config(path: str | None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    if not path:
        return {}, {}, Path.cwd()
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read connector configuration {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file} is not valid TOML: {exc}") from None
    known = {"connector": {"url", "cert", "key", "cacert", "key_password", "timeout", "parallel", "max_connections"},
             "issuer": {"cert", "key", "key_password", "validity_days", "profile"}}
    for section, keys in known.items():
        for key in data.get(section, {}):
            if key not in keys:
                raise ConfigurationError(f"{file}: unknown setting '{key}' in [{section}]; known: {', '.join(sorted(keys))}")
    for section in data:
        if section not in known:
            raise ConfigurationError(f"{file}: unknown section [{section}]; use [connector] and [issuer]")
    return data.get("connector", {}), data.get("issuer", {}), file.parent


def _path(value: Any, base: Path) -> str | None:
    if value is None or value == "":
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else base / p)


#: What ``connector serve-ra`` says when the one-time keys plugin is not installed.
RA_MODE_MISSING = ("install signpeer-onetimecrypto for RA mode (pip install signpeer-onetimecrypto[peers]): "
                   "serve-ra runs its RA loop")


class ConnectorCommand(Command):
    name = "connector"
    help = "The CA side of the peer protocol: ping, list, renew, renew-all, serve-ra"
    description = ("Connect to a signing server's peer endpoint as a CA (what EJBCA does) and renew its\n"
                   "workers' keys and certificates. Options may come from --config <toml file>:\n"
                   "  [connector] url, cert, key, cacert, key_password, timeout, parallel\n"
                   "  [issuer]    cert, key, key_password, validity_days, profile\n"
                   "serve-ra <url> answers the RA requests of one-time keys (the same loop and options as\n"
                   "signpeer ra serve; needs signpeer-onetimecrypto; no --config).")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--config", help="TOML file with [connector] and [issuer] settings")
        common.add_argument("--cert", help="the connector's TLS client certificate (PEM)")
        common.add_argument("--key", help="the connector's TLS client key (PEM)")
        common.add_argument("--cacert", help="CA certificate(s) to trust for the server's TLS certificate")
        common.add_argument("--timeout", type=float, help="seconds to wait for an answer (default 30)")
        common.add_argument("--json", action="store_true", help="print JSON")
        issuing = argparse.ArgumentParser(add_help=False)
        issuing.add_argument("--issuer-cert", help="issuing CA certificate (PEM; its issuers may follow)")
        issuing.add_argument("--issuer-key", help="issuing CA private key (PEM)")
        issuing.add_argument("--validity-days", type=int, help="validity of issued certificates (default 365)")
        issuing.add_argument("--profile", choices=("signer", "client", "server"),
                             help="certificate profile: key usage and extended key usage (default signer)")
        issuing.add_argument("--rekey", action="store_true", help="generate a new key pair first (NEXTCERTSIGNKEY)")
        sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
        for name, text in (("ping", "check the connection and this connector's authorization"),
                           ("list", "list the key bindings")):
            p = sub.add_parser(name, parents=[common], help=text)
            p.add_argument("url", nargs="?", help="https://host:port (the peer path is added)")
        p = sub.add_parser("renew", parents=[common, issuing], help="renew one key binding")
        p.add_argument("url", help="https://host:port")
        p.add_argument("binding", help="key binding id or name")
        p = sub.add_parser("renew-all", parents=[common, issuing], help="renew every active, online key binding")
        p.add_argument("url", nargs="?", help="https://host:port")
        p.add_argument("--expiring-within", type=float, metavar="DAYS",
                       help="only bindings without a certificate or whose certificate expires within DAYS")
        p.add_argument("--parallel", type=int, help="renewals at a time over the connection pool (default 8)")
        # Further actions from other plugins (hook signpeer_connector_commands), e.g. serve-ra.
        for cls in self.registry.collect("signpeer_connector_commands") if self.registry else []:
            action = cls(self.registry)
            p = sub.add_parser(cls.name, help=cls.help, description=cls.description or cls.help)
            action.configure(p)
            p.set_defaults(_connector_action=action)
        if "serve-ra" not in sub.choices:
            # Without the plugin every argument is taken as it comes (no '-' options, so no
            # "unrecognized arguments"), and run() says what to install.
            p = sub.add_parser("serve-ra", prefix_chars="\0", add_help=False,
                               help="CA side of RA mode (needs signpeer-onetimecrypto)")
            p.add_argument("ra_args", nargs="*", help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_peerconnector.client import PeerClient

        action = getattr(args, "_connector_action", None)
        if action is not None:
            return int(action.run(args, ctx))
        if args.action == "serve-ra":
            ctx.error(f"signpeer connector serve-ra: {RA_MODE_MISSING}")
            return 1
        conn, iss, base = _load_config(args.config)
        url = getattr(args, "url", None) or conn.get("url")
        cert = args.cert or _path(conn.get("cert"), base)
        key = args.key or _path(conn.get("key"), base)
        cacert = args.cacert or _path(conn.get("cacert"), base)
        if not url:
            raise BadRequestError("give the server URL (https://host:port) or url in the [connector] section")
        if not cert or not key:
            raise BadRequestError("give the connector's client certificate and key (--cert, --key, or cert/key in "
                                  "[connector])")
        timeout = args.timeout or float(conn.get("timeout", 30))
        label = f"signpeer connector {args.action}"
        try:
            with PeerClient(url, cert, key, cacert, timeout=timeout, key_password=conn.get("key_password"),
                            max_connections=int(conn.get("max_connections", 16))) as client:
                if args.action == "ping":
                    return self._ping(client, args, ctx)
                if args.action == "list":
                    return self._list(client, args, ctx)
                ca = self._issuer(args, iss, base)
                if args.action == "renew":
                    return self._renew(client, ca, args, ctx)
                return self._renew_all(client, ca, args, ctx, int(args.parallel or conn.get("parallel", 8)))
        except SignpeerError as exc:
            ctx.error(f"{label}: {exc.message}")
            return exc.exit_code

    @staticmethod
    def _issuer(args: argparse.Namespace, iss: dict[str, Any], base: Path) -> IssuingCA:
        cert = args.issuer_cert or _path(iss.get("cert"), base)
        key = args.issuer_key or _path(iss.get("key"), base)
        if not cert or not key:
            raise BadRequestError("renewing needs the issuing CA: --issuer-cert and --issuer-key (or [issuer] cert/key)")
        return IssuingCA.from_files(cert, key, validity_days=args.validity_days or int(iss.get("validity_days", 365)),
                                    profile=args.profile or iss.get("profile", "signer"),
                                    key_password=iss.get("key_password"))

    @staticmethod
    def _ping(client: PeerClient, args: argparse.Namespace, ctx: CommandContext) -> int:
        result = client.ping()
        if args.json:
            ctx.print(json.dumps(result, indent=2))
        else:
            ctx.print(f"Ping OK: {client.base_url} answered ({result['server']}, protocol {result['version']}) "
                      f"in {result['rttMs']:.1f} ms; authorized as {result['peer']['subject']} "
                      f"(serial {result['peer']['serial']}, issuer '{result['peer']['issuer']}')")
        return 0

    @staticmethod
    def _list(client: PeerClient, args: argparse.Namespace, ctx: CommandContext) -> int:
        bindings = client.list_bindings()
        if args.json:
            ctx.print(json.dumps(bindings, indent=2))
            return 0
        if not bindings:
            ctx.print("No authorized remote Internal Key Bindings found")
            return 0
        header = ("Id", "Name", "Status", "Operational", "Key", "Next key", "Algorithm", "Not after", "Certificate id")
        rows = [header] + [(
            str(b["id"]), b["name"], b["status"], b["operationalStatus"], b["keyPairAlias"] or "-",
            b["nextKeyPairAlias"] or "-", b["signatureAlgorithm"] or "-",
            (b["certificate"] or {}).get("notAfter", "-"), b["certificateId"] or "-") for b in bindings]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            ctx.print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return 0

    @staticmethod
    def _renew(client: PeerClient, ca: IssuingCA, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_peerconnector.client import renew

        result = renew(client, ca, args.binding, rekey=args.rekey)
        if not result.ok:
            ctx.error(f"signpeer connector renew: {args.binding}: {result.error}")
            return 1
        cert = result.certificate
        assert cert is not None  # a successful renewal installed one
        ctx.print(f"Renewed {result.binding}: key {result.key_alias}{' (new key)' if result.promoted else ''}, "
                  f"certificate serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
        return 0

    @staticmethod
    def _renew_all(client: PeerClient, ca: IssuingCA, args: argparse.Namespace, ctx: CommandContext, parallel: int) -> int:
        from signpeer_peerconnector.client import renew_all

        def progress(result: RenewalResult, done: int, total: int) -> None:
            width = len(str(total))
            what = f"renewed (key {result.key_alias}{', new key' if result.promoted else ''})" if result.ok \
                else f"FAILED: {result.error}"
            ctx.print(f"[{done:>{width}}/{total}] {result.binding}: {what}")

        summary = renew_all(client, ca, expiring_within=args.expiring_within, rekey=args.rekey, parallel=parallel,
                            progress=None if args.json else progress)
        if args.json:
            ctx.print(json.dumps({"renewed": [r.binding for r in summary.renewed],
                                  "failed": {r.binding: r.error for r in summary.failed},
                                  "skipped": dict(summary.skipped), "seconds": summary.seconds,
                                  "rate": summary.rate}, indent=2))
        else:
            for name, reason in summary.skipped:
                ctx.print(f"skipped {name}: {reason}")
            ctx.print(f"Summary: {len(summary.renewed)} renewed, {len(summary.failed)} failed, "
                      f"{len(summary.skipped)} skipped in {summary.seconds:.2f} s "
                      f"({summary.rate:.1f} renewals/s)")
        return 1 if summary.failed else 0


COMMANDS: list[type[Command]] = [WSPeerSystemsCommand, PeersCommand, ConnectorCommand]
