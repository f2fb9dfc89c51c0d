"""A process catching up on another process's renewal puts a copy of the worker in place instead of
building it (signpeer_core/runtime.py, ``Runtime.reload_workers``); the copy must still resolve what
the worker takes from its token (key, chain) as a build would, and a reload asked for in this
process must build. Two ``Services`` on one SQLite store are two processes of one server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signpeer_core import devpki
from signpeer_core.admin import WorkerAdmin
from signpeer_core.administration.publishing import reload_if_behind
from signpeer_core.services import Services
from signpeer_core.storage import Admin

PASSWORD = "foo123"


def signer(name: str) -> dict[str, str]:
    return {"NAME": name, "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner", "AUTHTYPE": "NOAUTH",
            "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "SoftCryptoToken", "KEYSTORETYPE": "INTERNAL",
            "KEYSTOREPASSWORD": PASSWORD, "DEFAULTKEY": "signer00001", "KEYALG": "ECDSA", "KEYSPEC": "secp256r1"}


def signing_with_a_chain(services: Services) -> tuple[Any, Any, Any]:
    """Key signer00001 of worker 1 with a chain in its token; (CA key, CA certificate, public key)."""
    token: Any = services.runtime.get(1).token
    token.generate_key("signer00001", "ECDSA", "secp256r1")
    ca_key, ca = devpki.make_ca("CN=Catch-up CA")
    public = token.public_key("signer00001")
    token.import_certificate_chain("signer00001", [devpki.issue(ca_key, ca, "CN=signer old", public), ca])
    return ca_key, ca, public


def test_a_reload_and_a_next_key_of_another_process_caught_up_at_once_resolve_the_new_chain(
        configure: Callable[..., None], open_services: Callable[[], Services]) -> None:
    configure(1, signer("Renewed"))
    server, other = open_services(), open_services()
    ca_key, ca, public = signing_with_a_chain(server)
    for services in (server, other):
        services.runtime.load()
    old_leaf = server.runtime.get(1).chain[0]

    # The other process: a new certificate into the token, reload (published), then a next key.
    admin = WorkerAdmin(other, Admin("tests"))
    new_leaf = devpki.issue(ca_key, ca, "CN=signer new", public)
    admin.import_certificate_chain(1, [new_leaf, ca], "signer00001")
    admin.reload(1)
    assert other.runtime.get(1).chain[0] == new_leaf
    admin.next_key(1, publish=True)

    builds = server.runtime.builds
    assert reload_if_behind(server)  # both generations at once: only NEXTCERTSIGNKEY differs
    assert server.runtime.builds == builds  # followed by a copy ...
    worker = server.runtime.get(1)
    assert worker.chain[0] == new_leaf != old_leaf  # ... that resolved the chain the token has now
    assert worker.config.get_str("NEXTCERTSIGNKEY")
    assert worker.status().active, worker.status().reasons


def test_reload_of_a_worker_with_a_staged_next_key_takes_the_chain_imported_into_its_token(
        configure: Callable[..., None], open_services: Callable[[], Services]) -> None:
    """SignServer's flow: generatenextkey (staged), importcertificatechain into the token, reload."""
    configure(1, signer("Renewed"))
    server = open_services()
    ca_key, ca, public = signing_with_a_chain(server)
    server.runtime.load()
    admin = WorkerAdmin(server, Admin("tests"))
    admin.generate_next_key(1)  # staged
    new_leaf = devpki.issue(ca_key, ca, "CN=signer new", public)
    admin.import_certificate_chain(1, [new_leaf, ca], "signer00001")
    builds = server.runtime.builds
    admin.reload(1)
    assert server.runtime.builds == builds + 1
    assert server.runtime.get(1).chain[0] == new_leaf
