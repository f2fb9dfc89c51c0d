"""The test PKI: a development CA with TLS server and client certificates, written as PEM files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from signpeer_core import devpki


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
    pki = PKI(directory, ca_key, ca_cert, ca_pem, None, None, None)  # type: ignore[arg-type]  # server, admin, client: set just below
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
