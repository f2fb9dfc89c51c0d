"""Test helpers for signpeer and its plugins: a development PKI, data directories, server processes.

Used by ``tests/conftest.py`` (which wraps them in fixtures) and importable by plugin tests
(``from signpeer_core.testing import make_pki, add_signer, ServerProcess``). Not used by the
server itself.

* :func:`make_pki`: a P-256 development CA (devpki) with a TLS server certificate for
  localhost/127.0.0.1, an administrator client certificate (``admin``) and a second client
  certificate (``client``), written as PEM files; ``pki.issue_client(cn)`` and
  ``pki.issue_signer(public_key, dn)`` make more.
* :func:`write_home`: a data directory with ``signpeer.toml`` (port 0 = any free port, fast
  reload polling), ``tls/`` laid out as ``signpeer init`` lays it out (server.pem,
  server-key.pem, client-ca.pem, ca.pem, admin.pem, admin-key.pem), a database, and the
  administrator in ``WSADMINS``.
* :func:`open_services` / :func:`add_signer`: a worker with a soft-token key
  (``SoftCryptoToken``, ``KEYSTORETYPE=INTERNAL``) and a certificate from the development CA.
* :class:`ServerProcess`: ``signpeer serve`` as a subprocess on a free port, started when it
  answers HTTPS (``startup_seconds`` says how long that took).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from signpeer_core import devpki
from signpeer_core.clientrules import ClientRule, serialize_rules

PASSWORD = "foo123"


# -- PKI --------------------------------------------------------------------------------------------

@dataclass
class Credential:
    cert: x509.Certificate
    key: Any
    pem: Path
    key_pem: Path

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.pem), str(self.key_pem)


@dataclass
class PKI:
    dir: Path
    ca_key: Any
    ca_cert: x509.Certificate
    ca_pem: Path
    server: Credential
    admin: Credential
    client: Credential
    _n: int = field(default=0)

    def _write(self, name: str, cert: x509.Certificate, key: Any) -> Credential:
        pem, key_pem = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        devpki.write_public(pem, devpki.cert_pem(cert))
        devpki.write_private(key_pem, devpki.key_pem(key))
        return Credential(cert, key, pem, key_pem)

    def issue_client(self, cn: str, dn_suffix: str = ", O=signpeer tests", **kwargs: Any) -> Credential:
        """A client certificate from the development CA (kwargs go to devpki.issue)."""
        key = devpki.new_key()
        cert = devpki.issue(self.ca_key, self.ca_cert, f"CN={cn}{dn_suffix}", key.public_key(), profile="client",
                            **kwargs)
        self._n += 1
        return self._write(f"client-{self._n}-{cn.replace(' ', '_')}", cert, key)

    def issue_signer(self, public_key: Any, dn: str) -> x509.Certificate:
        return devpki.issue(self.ca_key, self.ca_cert, dn, public_key, profile="signer")


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = devpki.make_ca("CN=signpeer test CA, O=signpeer tests")
    ca_pem = directory / "ca.pem"
    devpki.write_public(ca_pem, devpki.cert_pem(ca_cert))
    pki = PKI(directory, ca_key, ca_cert, ca_pem, None, None, None)  # type: ignore[arg-type]
    skey = devpki.new_key()
    scert = devpki.issue(ca_key, ca_cert, "CN=localhost, O=signpeer tests", skey.public_key(), profile="server",
                         dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    pki.server = pki._write("server", scert, skey)
    akey = devpki.new_key()
    acert = devpki.issue(ca_key, ca_cert, "CN=admin, O=signpeer tests", akey.public_key(), profile="client")
    pki.admin = pki._write("admin", acert, akey)
    ckey = devpki.new_key()
    ccert = devpki.issue(ca_key, ca_cert, "CN=client1, OU=builds, O=signpeer tests", ckey.public_key(),
                         profile="client")
    pki.client = pki._write("client", ccert, ckey)
    return pki


# -- data directories and services --------------------------------------------------------------

def write_home(home: Path, pki: PKI, settings: str = "") -> Path:
    """A data directory as ``signpeer init`` leaves it (without workers)."""
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings
    from signpeer_core.storage import Admin, AuditEvent

    home.mkdir(parents=True, exist_ok=True)
    (home / "signpeer.toml").write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\nreload_poll_interval = 0.2\n' + settings)
    tls = home / "tls"
    tls.mkdir(exist_ok=True)
    for src, dst in [(pki.server.pem, "server.pem"), (pki.server.key_pem, "server-key.pem"),
                     (pki.ca_pem, "client-ca.pem"), (pki.ca_pem, "ca.pem"),
                     (pki.admin.pem, "admin.pem"), (pki.admin.key_pem, "admin-key.pem")]:
        (tls / dst).write_bytes(Path(src).read_bytes())
        if dst.endswith("key.pem"):
            os.chmod(tls / dst, 0o600)
    services = Services.open(load_settings(home), load=False)
    try:
        rules = serialize_rules([ClientRule.for_certificate(pki.admin.cert)])
        services.store.update_global({"GLOB.WSADMINS": rules},
                                     audit=[AuditEvent("SET_GLOBAL_PROPERTY", "GLOBAL_CONFIG", Admin("tests"))])
    finally:
        services.close()
    return home


def open_services(home: Path) -> Any:
    """Services on a data directory (close them, or use the ``services`` fixture)."""
    from signpeer_core.services import Services
    from signpeer_core.settings import load_settings

    return Services.open(load_settings(home))


def add_signer(services: Any, pki: PKI, name: str, implementation: str = "PlainSigner",
               keyalg: str = "ECDSA", keyspec: str = "secp256r1", **props: str) -> int:
    """Create a signer with its own soft token (INTERNAL keystore, auto-activated), a key and a
    certificate from the development CA; returns the worker id. Call ``reload`` (or bump the
    generation) for a running server to see it."""
    from signpeer_core.certificates import encode_certificate_property
    from signpeer_core.storage import Admin, AuditEvent

    store, runtime = services.store, services.runtime
    wid = store.next_worker_id()
    base = {"NAME": name, "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": implementation,
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
            "KEYSTOREPASSWORD": PASSWORD, "DEFAULTKEY": "signer00001"}
    base.update({k.upper(): v for k, v in props.items()})
    store.update_worker(wid, base, audit=[AuditEvent("SET_WORKER_CONFIG", "WORKER_CONFIG", Admin("tests"), wid)])
    runtime.load()
    token = runtime.get(name).token
    token.generate_key("signer00001", keyalg, keyspec)
    cert = pki.issue_signer(token.public_key("signer00001"), f"CN={name}, O=signpeer tests")
    store.update_worker(wid, {"SIGNERCERTCHAIN": encode_certificate_property([cert, pki.ca_cert])})
    runtime.load()
    return wid


# -- server processes --------------------------------------------------------------------------

def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNPEER_")}
    env["SIGNPEER_HOME"] = str(home)
    env.update(extra or {})
    return env


def signpeer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "signpeer_core.cli.main", *args]


def run_signpeer(home: Path, *args: str, input: bytes | None = None, timeout: float = 60,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a ``signpeer`` command on ``home``; returns the completed process (bytes output)."""
    return subprocess.run(signpeer_cmd(*args), env=server_env(home, env), input=input, capture_output=True,
                          timeout=timeout, cwd=home if home.is_dir() else None)


def client_context(ca: Path | str, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


class ServerProcess:
    """One ``signpeer serve`` subprocess on a free port."""

    def __init__(self, home: Path, args: tuple[str, ...], env: dict[str, str] | None) -> None:
        self.home = home
        self.args = args
        self.env = env
        self.log_path = home / f"server-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.startup_seconds = 0.0

    def start(self, timeout: float = 20.0) -> ServerProcess:
        started = time.perf_counter()
        args = list(self.args)
        if "--port" not in args:
            args += ["--port", "0"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(signpeer_cmd("serve", *args), env=server_env(self.home, self.env),
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.home)
        info_path = self.home / "run" / "server.json"
        deadline = time.monotonic() + timeout
        ctx = client_context(self.home / "tls" / "ca.pem")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signpeer serve exited with {self.proc.returncode}:\n{self.log()}")
            if not self.url:
                try:
                    info = json.loads(info_path.read_text())
                    if info.get("pid") == self.proc.pid:
                        self.url, self.port = info["url"], info["port"]
                except (OSError, ValueError):
                    pass
            if self.url:
                try:
                    httpx.get(self.url + "/healthcheck", verify=ctx, timeout=2)
                    self.startup_seconds = time.perf_counter() - started
                    return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"signpeer serve did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


# -- SoftHSM2 ------------------------------------------------------------------------------------

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: Tokens of the shared test configuration: (label, user PIN, SO PIN).
SOFTHSM_TOKENS = (("signpeer", "1234", "5678"), ("onetime", "1234", "5678"))
_softhsm_conf: Path | None = None


def session_softhsm() -> Path | None:
    """One SoftHSM2 configuration for a whole test process, with every test token initialized.

    SoftHSM2 reads ``SOFTHSM2_CONF`` and finds its tokens once, when the module is first
    initialized in a process; so all in-process tests must share one configuration created
    before anything loads the module. Called from the repository's root ``conftest.py``.
    Returns the configuration file, or None when SoftHSM2 is not installed.
    """
    global _softhsm_conf
    import shutil
    import tempfile

    if _softhsm_conf is not None:
        return _softhsm_conf
    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        return None
    root = Path(tempfile.mkdtemp(prefix="signpeer-softhsm-"))
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label, pin, so_pin in SOFTHSM_TOKENS:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
                       check=True, capture_output=True, env={**os.environ})
    _softhsm_conf = conf
    return conf
