"""Certificate installs check the chain: order, signatures, validity, basic constraints, length.

Before, only the leaf's key was compared: an expired leaf, a CA:TRUE leaf, a leaf the next
certificate did not sign and a chain of thousands were all installed. Every refusal is a 400
and leaves the configuration as it was.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509

from signpeer_core import devpki
from signpeer_core.admin import WorkerAdmin
from signpeer_core.certificates import MAX_CHAIN_LENGTH
from signpeer_core.errors import BadRequestError
from signpeer_core.storage import Admin
from signpeer_core.testing import PKI, add_signer

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def signer(services: Any, pki: PKI) -> tuple[WorkerAdmin, Any]:
    add_signer(services, pki, "Installs", implementation="CMSSigner", AUTHTYPE="NOAUTH")
    token = services.runtime.get("Installs").token
    return WorkerAdmin(services, Admin("tests")), token.public_key("signer00001")


def leaf(pki: PKI, public: Any, **kwargs: Any) -> x509.Certificate:
    return devpki.issue(pki.ca_key, pki.ca_cert, "CN=Installs, O=signpeer tests", public, **kwargs)


def refused(admin: WorkerAdmin, services: Any, chain: list[x509.Certificate], *words: str) -> None:
    before = services.store.worker_properties(services.runtime.get("Installs").id)
    with pytest.raises(BadRequestError) as caught:
        admin.install_certificate_chain("Installs", chain)
    assert caught.value.status == 400
    for word in words:
        assert word in caught.value.message, caught.value.message
    assert services.store.worker_properties(services.runtime.get("Installs").id) == before  # nothing changed


def test_a_good_chain_is_installed(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    good = leaf(pki, public)
    assert admin.install_certificate_chain("Installs", [good, pki.ca_cert]).chain == [good, pki.ca_cert]


def test_expired_and_not_yet_valid_leaves_are_refused(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    expired = leaf(pki, public, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    refused(admin, services, [expired, pki.ca_cert], "expired")
    future = leaf(pki, public, not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=30))
    refused(admin, services, [future, pki.ca_cert], "not valid before")
    # A notBefore a few seconds ahead (clock skew between CA and server) is accepted.
    admin.install_certificate_chain("Installs", [leaf(pki, public, not_before=NOW + dt.timedelta(seconds=30)),
                                                 pki.ca_cert])


def test_a_ca_leaf_and_a_non_ca_issuer_are_refused(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    refused(admin, services, [leaf(pki, public, profile="ca"), pki.ca_cert], "CA:TRUE")
    middle_key = devpki.new_key()
    not_a_ca = devpki.issue(pki.ca_key, pki.ca_cert, "CN=Not a CA", middle_key.public_key(), profile="signer")
    below = devpki.issue(middle_key, not_a_ca, "CN=Installs", public)
    refused(admin, services, [below, not_a_ca, pki.ca_cert], "not a CA certificate")


def test_order_and_signatures_are_checked(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    good = leaf(pki, public)
    # An unrelated CA, even one with the same name as the real issuer, did not sign the leaf.
    _, other_ca = devpki.make_ca("CN=Some other CA")
    refused(admin, services, [good, other_ca], "not issued by the next certificate")
    _, same_name = devpki.make_ca("CN=signpeer test CA, O=signpeer tests")
    refused(admin, services, [good, same_name], "not issued by the next certificate")
    # An intermediate out of order.
    inter_key = devpki.new_key()
    inter = devpki.issue(pki.ca_key, pki.ca_cert, "CN=Intermediate", inter_key.public_key(), profile="ca")
    below = devpki.issue(inter_key, inter, "CN=Installs", public)
    refused(admin, services, [below, pki.ca_cert, inter], "not issued by the next certificate")
    assert len(admin.install_certificate_chain("Installs", [below, inter, pki.ca_cert]).chain) == 3


def test_a_chain_over_the_length_bound_is_refused(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    chain = [leaf(pki, public)] + [pki.ca_cert] * MAX_CHAIN_LENGTH
    refused(admin, services, chain, f"at most {MAX_CHAIN_LENGTH}")


def test_import_into_the_token_is_checked_too(signer: Any, services: Any, pki: PKI) -> None:
    admin, public = signer
    expired = leaf(pki, public, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(BadRequestError, match="expired"):
        admin.import_certificate_chain("Installs", [expired, pki.ca_cert], "signer00001")
