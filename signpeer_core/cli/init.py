"""``signpeer init``: a ready-to-run data directory.

It creates, in ``--home``/``SIGNPEER_HOME``/``~/.signpeer``:

* ``signpeer.toml`` with every setting commented out at its default;
* the database (``signpeer.db``);
* a development CA (``tls/ca.pem``, ``tls/ca-key.pem``), a TLS server certificate for
  localhost/127.0.0.1/::1, ``tls/client-ca.pem`` (the CA trusted for client certificates);
* the first administrator's client certificate (``tls/admin.pem``/``admin-key.pem`` and
  ``tls/admin.p12`` for a browser, its password in ``tls/admin.p12.password``), authorized in
  ``GLOB.WSADMINS`` and ``GLOB.WSAUDITORS`` (the Auditor role reads the audit log);
* a demo CMS signer (left out with ``--empty``): crypto worker ``DemoCryptoToken`` (id 90001,
  soft token, ``keystores/demo.p12``, auto-activated by a generated ``KEYSTOREPASSWORD``) and
  signer ``DemoCMSSigner`` (id 90002) with an EC P-256 key ``signer00001`` certified by the
  development CA. The ids are in the demo band (:data:`~signpeer_core.identifiers.DEMO_ID_BAND`)
  and the names are the demo's own, so SignServer's sample files and quick start (ids 1, 2, ...,
  names ``CryptoTokenP12``, ``CMSSigner``) load next to it unchanged.

and prints the curl command that signs with the demo signer and the openssl command that
verifies the result. Everything a later command or the server needs is in the directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import shlex
import shutil
import string
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from signpeer_core import devpki
from signpeer_core.audit import Admin
from signpeer_core.cli.base import Command, CommandContext
from signpeer_core.clientrules import ClientRule, serialize_rules
from signpeer_core.errors import ConfigurationError
from signpeer_core.identifiers import DEMO_ID_BAND
from signpeer_core.keys import PrivateKey
from signpeer_core.settings import SETTINGS_FILE, Settings, home_from_env, load_settings

if TYPE_CHECKING:
    from signpeer_core.admin import WorkerAdmin
    from signpeer_core.services import Services

DEMO_TOKEN = "DemoCryptoToken"
DEMO_SIGNER = "DemoCMSSigner"
DEMO_TOKEN_ID = DEMO_ID_BAND + 1
DEMO_SIGNER_ID = DEMO_ID_BAND + 2
DEMO_ALIAS = "signer00001"
SOFT_TOKEN = "SoftCryptoToken"

#: What ``--force`` replaces; anything else in the directory is left alone.
_OWNED = ("signpeer.toml", "signpeer.db", "signpeer.db-wal", "signpeer.db-shm", "signpeer.db.wake", "signpeer.db.locks",
          "tls", "keystores/demo.p12", "run")

SETTINGS_TEMPLATE = """\
# signpeer deploy-time settings (written by signpeer init).
# Every setting can also be given as an environment variable SIGNPEER_<NAME in capitals>
# (e.g. SIGNPEER_PORT=9443), which wins over this file; command-line options win over both.
# Relative paths are relative to this directory. Worker configuration lives in the database.

[server]
# database_url = "sqlite:///{home}/signpeer.db"   # default: signpeer.db here
# host = "127.0.0.1"
# port = 8443
# certfile = "tls/server.pem"                 # TLS server certificate (chain)
# keyfile = "tls/server-key.pem"
# client_cafiles = ["tls/client-ca.pem"]      # CAs trusted for client certificates
# workers = 1                                 # server processes
# cpu_affinity = "off"                        # auto or a CPU list: each process on one CPU (docs/performance.md)
# max_body_size = 10485760                    # largest request body, bytes
# timeout_keep_alive = 75                     # seconds
# max_connections = 0                         # per process; 0: as many as the open-file limit allows
# max_connections_per_address = 512           # per process and client address; 0: no limit
# tls_handshake_timeout = 10.0                # seconds
# header_timeout = 10.0                       # seconds for a complete request head
# body_timeout = 60.0                         # seconds for a complete request body
# reload_poll_interval = 1.0                  # seconds between fallback checks (reload is pushed)
# log_file = ""                               # default: stderr
# log_level = "INFO"
# node_id = "<host name>"                     # NODE. scope of global properties
"""


def new_password(length: int = 24) -> str:
    """A random password of letters and digits: safe to pass as a command-line argument
    (``token_urlsafe`` may start with ``-``, which would read as an option)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _demo_commands(home: Path, settings: Settings) -> tuple[str, str]:
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    ca = shlex.quote(str(home / "tls" / "ca.pem"))
    extract = ("python3 -c 'import base64, json, sys; "
               "sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)[\"data\"]))'")
    curl = (f"curl -sS --fail-with-body --cacert {ca} -H 'X-Keyfactor-Requested-With: 1' "
            f"-H 'Content-Type: application/json' -d '{{\"data\": \"Hello, signpeer!\", \"encoding\": \"NONE\"}}' "
            f"https://{host}:{settings.port}/signserver/rest/v1/workers/{DEMO_SIGNER}/process "
            f"| {extract} > signed.p7s")
    verify = f"openssl cms -verify -CAfile {ca} -inform DER -in signed.p7s"
    return curl, verify


def _refuse_configured_database(settings: Settings, ctx: CommandContext) -> None:
    """A shared database that already holds a configuration belongs to another node's init."""
    from signpeer_core.services import Services
    from signpeer_core.storage.database import hide_password
    from signpeer_core.storage.protection import MissingKeyError

    try:
        services = Services.open(settings, registry=ctx.registry, load=False)
    except MissingKeyError:  # another node set it up with its own data protection key
        configured, where = True, hide_password(settings.database)
    else:
        try:
            configured = bool(services.store.worker_ids() or services.store.global_properties())
            where = services.store.database.description
        finally:
            services.close()
    if configured:
        raise ConfigurationError(
            f"the database {where} already holds a signpeer configuration; to add a node to it, copy an existing "
            f"node's data directory (its tls/, signpeer.toml and signpeer.key) and give it its own node_id "
            f"(docs/cluster.md)")


def _clear(home: Path) -> None:
    for name in _OWNED:
        path = home / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class InitCommand(Command):
    name = "init"
    help = "create a data directory: settings, database, development CA, TLS and admin certificates, demo signer"
    description = ("Creates the data directory (--home, SIGNPEER_HOME or ~/.signpeer) with everything "
                   "signpeer serve needs, and prints how to sign with the demo signer. Refuses to touch an "
                   "existing data directory unless --force, which replaces what init creates (database included).")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--force", action="store_true",
                            help="replace an existing data directory's settings, database, certificates and demo keystore")
        parser.add_argument("--database-url", help="the database: sqlite:///<path> (default signpeer.db here) or "
                                                   "postgresql://user:password@host:port/db (an empty database; "
                                                   "written to signpeer.toml)")
        parser.add_argument("--node", dest="node_id", help="this node's id (default the host name; NODE. scope; "
                                                           "written to signpeer.toml)")
        parser.add_argument("--empty", action="store_true",
                            help="create no demo workers (for loading SignServer property files into a clean server)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.admin import WorkerAdmin
        from signpeer_core.services import Services
        from signpeer_core.storage.database import hide_password

        home = home_from_env(ctx.home)
        existing = [n for n in ("signpeer.toml", "signpeer.db", "tls") if (home / n).exists()]
        if existing and not args.force:
            raise ConfigurationError(
                f"{home} is already a signpeer data directory ({', '.join(existing)} exist); "
                "use it as it is, choose another --home, or add --force to replace it (the database too)")
        if home.exists() and not home.is_dir():
            raise ConfigurationError(f"{home} exists and is not a directory")
        if args.force:
            ctx.close()  # a database opened earlier in this process must not survive the replacement
            _clear(home)
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        chosen = "".join(f'{key} = {json.dumps(value)}\n' for key, value in
                         (("database_url", args.database_url), ("node_id", args.node_id)) if value)
        devpki.write_private(home / SETTINGS_FILE, (SETTINGS_TEMPLATE.format(home=home) + chosen).encode())
        settings = load_settings(home)
        if settings.database.startswith(("postgresql", "postgres:")):
            _refuse_configured_database(settings, ctx)
        tls = home / "tls"

        # Development CA, TLS server certificate, client CA.
        ca_key, ca_cert = devpki.make_ca("CN=signpeer Development CA,O=signpeer,C=SE")
        devpki.write_private(tls / "ca-key.pem", devpki.key_pem(ca_key))
        devpki.write_public(tls / "ca.pem", devpki.cert_pem(ca_cert))
        devpki.write_public(tls / "client-ca.pem", devpki.cert_pem(ca_cert))
        server_key = devpki.new_key()
        server_cert = devpki.issue(ca_key, ca_cert, "CN=localhost,O=signpeer,C=SE", server_key.public_key(),
                                   profile="server", days=825, dns_names=("localhost",),
                                   ip_addresses=("127.0.0.1", "::1"))
        devpki.write_private(tls / "server-key.pem", devpki.key_pem(server_key))
        devpki.write_public(tls / "server.pem", devpki.cert_pem(server_cert))

        # The first administrator.
        admin_key = devpki.new_key()
        admin_cert = devpki.issue(ca_key, ca_cert, "CN=signpeer Administrator,O=signpeer,C=SE",
                                  admin_key.public_key(), profile="client", days=825)
        p12_password = new_password(16)
        devpki.write_private(tls / "admin-key.pem", devpki.key_pem(admin_key))
        devpki.write_public(tls / "admin.pem", devpki.cert_pem(admin_cert))
        devpki.write_private(tls / "admin.p12",
                             devpki.pkcs12_bundle("signpeer Administrator", admin_key, admin_cert, [ca_cert],
                                                  p12_password))
        devpki.write_private(tls / "admin.p12.password", (p12_password + "\n").encode())

        services = Services.open(settings, registry=ctx.registry, load=False)
        try:
            admin = WorkerAdmin(services, Admin(name="signpeer init"))
            rule = serialize_rules([ClientRule.for_certificate(admin_cert)])
            # Admin and Auditor: as in SignServer, only the Auditor role reads the audit log, and
            # the first administrator should see what they change.
            admin.set_global("global", "WSADMINS", rule)
            admin.set_global("global", "WSAUDITORS", rule)
            demo_ok = args.empty or self._demo_signer(admin, services, ca_key, ca_cert, ctx)
        finally:
            services.close()

        ctx.print(f"Created the signpeer data directory {home}:")
        ctx.print(f"  settings        {home / SETTINGS_FILE}")
        ctx.print(f"  database        {hide_password(settings.database)}")
        ctx.print(f"  development CA  {tls / 'ca.pem'} (key: ca-key.pem)")
        ctx.print(f"  TLS server      {tls / 'server.pem'} for localhost, 127.0.0.1, ::1")
        ctx.print(f"  administrator   {tls / 'admin.pem'}, admin-key.pem; for a browser {tls / 'admin.p12'}")
        ctx.print(f"                  admin.p12 password (shown once, also in admin.p12.password): {p12_password}")
        if "adminweb" in ctx.registry.infos:  # the signpeer-adminweb plugin is installed
            web_host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
            web_host = f"[{web_host}]" if ":" in web_host else web_host
            ctx.print(f"  Admin Web       https://{web_host}:{settings.port}/signserver/adminweb/ : import admin.p12 "
                      f"into the browser's certificates and trust {tls / 'ca.pem'} as an authority "
                      "(plugins/adminweb/README.md)")
        ctx.print("")
        if args.empty:
            ctx.print("No demo workers (--empty). Start the server with:")
            ctx.print(f"  signpeer --home {shlex.quote(str(home))} serve")
            return 0
        if not demo_ok:
            ctx.print(f"The demo signer needs the soft crypto token ({SOFT_TOKEN}): pip install signpeer-softtoken, "
                      f"then run signpeer init --force.")
            return 0
        curl, verify = _demo_commands(home, settings)
        ctx.print(f"Demo signer: {DEMO_SIGNER} (id {DEMO_SIGNER_ID}, key {DEMO_ALIAS}, EC P-256) using crypto worker "
                  f"{DEMO_TOKEN} (id {DEMO_TOKEN_ID}); new workers get ids from 1 as in SignServer "
                  f"(remove the demo with signpeer removeworker {DEMO_SIGNER} and {DEMO_TOKEN}).")
        ctx.print("")
        ctx.print("Start the server:")
        ctx.print(f"  signpeer --home {shlex.quote(str(home))} serve")
        ctx.print("Sign with the demo signer:")
        ctx.print(f"  {curl}")
        ctx.print("Verify the signature:")
        ctx.print(f"  {verify}")
        return 0

    @staticmethod
    def _demo_signer(admin: WorkerAdmin, services: Services, ca_key: PrivateKey, ca_cert: x509.Certificate,
                     ctx: CommandContext) -> bool:
        """The demo crypto worker and CMS signer; False when no soft token plugin is installed."""
        if SOFT_TOKEN not in services.registry.token_types:
            return False
        admin.create_worker({
            "NAME": DEMO_TOKEN, "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": SOFT_TOKEN, "KEYSTORETYPE": "PKCS12",
            "KEYSTOREPATH": "keystores/demo.p12", "KEYSTOREPASSWORD": new_password(),
        }, worker_id=DEMO_TOKEN_ID)
        admin.create_worker({
            "NAME": DEMO_SIGNER, "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
            "CRYPTOTOKEN": DEMO_TOKEN, "DEFAULTKEY": DEMO_ALIAS, "AUTHTYPE": "NOAUTH",
            "KEYALG": "ECDSA", "KEYSPEC": "secp256r1",
        }, worker_id=DEMO_SIGNER_ID)
        # The demo token's keystore file does not exist until create_keystore makes it: its
        # auto-activation at load would warn about the missing file, which is expected here.
        workers_log = logging.getLogger("signpeer.workers")
        level = workers_log.level
        workers_log.setLevel(logging.ERROR)
        try:
            services.runtime.load()
        finally:
            workers_log.setLevel(level)
        admin.create_keystore(DEMO_TOKEN)  # the keystore file, protected by KEYSTOREPASSWORD; activates the token
        alias = admin.generate_key(DEMO_SIGNER, DEMO_ALIAS, "ECDSA", "secp256r1")
        _, token = admin.token(DEMO_SIGNER)
        cert = devpki.issue(ca_key, ca_cert, "CN=signpeer demo CMS signer,O=signpeer,C=SE", token.public_key(alias),
                            profile="signer", days=825)
        admin.install_certificate_chain(DEMO_SIGNER, [cert, ca_cert])
        admin.reload("all")
        status = services.runtime.get(DEMO_SIGNER).status()
        if not status.active:
            ctx.error(f"warning: the demo signer is OFFLINE: {'; '.join(status.reasons)}")
        return True
