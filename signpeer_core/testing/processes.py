"""``signpeer`` as subprocesses: one-shot commands and a running ``signpeer serve``."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from signpeer_core.plugins import EXTRA_ENV
from signpeer_core.testing.plugin import enable as enable_test_plugin


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``signpeer`` subprocess on ``home``: this process's, without its
    ``SIGNPEER_*`` settings but with the test plugins (``SIGNPEER_EXTRA_PLUGINS``), plus ``extra``.
    A run on PostgreSQL (``SIGNPEER_TEST_DATABASE_URL``) keeps its one data protection key
    (``SIGNPEER_KEY``, set by the fixtures) for the subprocesses too."""
    keep = {EXTRA_ENV, "SIGNPEER_KEY"} if os.environ.get("SIGNPEER_TEST_DATABASE_URL") else {EXTRA_ENV}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNPEER_") or k in keep}
    enable_test_plugin(env)
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
        #: CPU time (user + system) the server process used until it first answered: what start-up
        #: costs whatever else the machine is doing (``startup_seconds`` grows with the load).
        self.startup_cpu_seconds = 0.0

    def start(self, timeout: float = 60.0) -> ServerProcess:
        started = time.perf_counter()
        args = list(self.args)
        if "--port" not in args:
            args += ["--port", "0"]
        self._log = open(self.log_path, "wb")  # the server writes it until stop() closes it
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
                    # Connecting fails fast while the server is not listening; once it is, one probe
                    # waits for its answer (the health check reads every worker: a probe given up and
                    # sent again would only queue behind the first).
                    httpx.get(self.url + "/healthcheck", verify=ctx,
                              timeout=httpx.Timeout(2, read=max(2.0, deadline - time.monotonic())))
                    self.startup_seconds = time.perf_counter() - started
                    self.startup_cpu_seconds = _cpu_seconds(self.proc.pid)
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

    def stop(self, timeout: float = 30.0) -> int | None:
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
