"""HAProxy in TCP mode in front of several ``signpeer serve`` nodes, for cluster tests.

TCP mode (not HTTP): the TLS connection goes through untouched, so each node sees the client's
certificate as it would without a load balancer. Health checks every 100 ms take a node that
stopped answering out of rotation; ``option redispatch`` with retries sends a connection whose
node refused it to another one. Debian's ``haproxy`` package (``/usr/sbin/haproxy``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from signpeer_core.testing.postgres import free_port
from signpeer_core.testing.wait import wait_until

CONFIG = """\
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend signpeer
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


class HAProxy:
    """``haproxy`` on a free port of 127.0.0.1, balancing over ``backends`` (host, port)."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("haproxy is not installed; run scripts/system-deps.sh")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="signpeer-haproxy-"))
        servers = "\n".join(f"    server node{i} {host}:{port} check inter 100ms fall 1 rise 2"
                            for i, (host, port) in enumerate(backends))
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(CONFIG.format(port=self.port, servers=servers))
        self.log = self.dir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        check = subprocess.run([self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its configuration: {check.stdout}{check.stderr}")
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)], stdout=self._out,
                                     stderr=subprocess.STDOUT)
        wait_until(self._listening, timeout=20, what="haproxy to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.log.read_text(errors='replace')}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)
