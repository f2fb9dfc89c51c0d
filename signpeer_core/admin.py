"""The administration service layer's facade: :class:`WorkerAdmin`, one object for all concepts.

The ``signpeer`` command line, the peer endpoint (CA-driven renewal) and the Admin Web all change
workers through :class:`WorkerAdmin`, so the rules live in one place. Each concept lives in its
own module of :mod:`signpeer_core.administration` (worker properties, global properties and
client rules, keys, signer certificates, activation); every change is written with its audit
records in one transaction, and made active by :func:`~signpeer_core.administration.publish`
(the generation bump in that same transaction). Audit events use SignServer's names (spec §8).

Errors are :mod:`signpeer_core.errors` classes whose messages say what to do next.
"""

from __future__ import annotations

from signpeer_core.administration.activation import Activation
from signpeer_core.administration.global_properties import GlobalProperties
from signpeer_core.administration.keys import DEFAULT_KEYALG, DEFAULT_KEYSPEC, Keys, KeyTestResult, NextKey
from signpeer_core.administration.signer_certificates import CsrResult, InstallResult, SignerCertificates
from signpeer_core.audit import GLOBAL_CONFIG, KEY_MANAGEMENT, MASK, WORKER_CONFIG, config_diff, is_secret_key


class WorkerAdmin(Activation, SignerCertificates, Keys, GlobalProperties):
    """Administration of workers, global properties and keys on behalf of one administrator."""


__all__ = [
    "DEFAULT_KEYALG", "DEFAULT_KEYSPEC", "GLOBAL_CONFIG", "KEY_MANAGEMENT", "MASK", "WORKER_CONFIG", "CsrResult",
    "InstallResult", "KeyTestResult", "NextKey", "WorkerAdmin", "config_diff", "is_secret_key",
]
