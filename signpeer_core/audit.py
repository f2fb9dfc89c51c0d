"""The audit log's vocabulary: who made a change (:class:`Admin`), one record (:class:`AuditEvent`),
SignServer's module names, and how a configuration change is described without its secrets.

Records are written by the store in the same transaction as the change they describe (see
:mod:`signpeer_core.administration.publishing`); this module only shapes them.
"""

from __future__ import annotations

import inspect
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# SignServer's audit modules.
WORKER_CONFIG = "WORKER_CONFIG"
GLOBAL_CONFIG = "GLOBAL_CONFIG"
KEY_MANAGEMENT = "KEY_MANAGEMENT"

# What looks like a secret by its name: passwords (KEYSTOREPASS, PASSWD, ...PASSPHRASE), PINs,
# secrets, authentication codes, private and API keys, tokens and credentials as a name's last
# part (MY_API_TOKEN, not CRYPTOTOKEN; API_KEY, not DEFAULTKEY or KEYSTOREPATH). USER.<name>
# holds password hashes (AUTHTYPE=USERNAME): not secret as such, but no log needs them.
_SECRET = re.compile(r"PASS(WORD|WD|PHRASE)?$|PASSWORD|PASSWD|SECRET|AUTHCODE|PIN$|PIN[_.]|PRIVATE_?KEY"
                     r"|(^|[_.])(API_?)?KEY$|APIKEY|(^|[_.])TOKEN$|(^|[_.])TOKEN[_.]|CREDENTIAL|^USER\.")
MASK = "********"

#: Property names that plugins declare secret (``PropertyDoc(..., secret=True)``), upper case.
_declared: set[str] = set()
_pending: list[Callable[[], Callable[[], object] | None]] = []
_pending_lock = threading.RLock()


def declare_secrets(names: Iterable[str]) -> None:
    """Add property names a plugin declares secret (done by the registry as types load)."""
    _declared.update(n.upper() for n in names)


def declare_secrets_later(loader: Callable[[], object]) -> None:
    """Run ``loader`` (which calls :func:`declare_secrets`) before the next secret check: a registry
    that loads its plugins' types on first use (the CLI's) still has them declared before any
    property is masked or sealed. Only a weak reference to a bound method is kept."""
    _pending.append(weakref.WeakMethod(loader) if inspect.ismethod(loader) else (lambda: loader))


def _load_pending() -> None:
    with _pending_lock:
        while _pending:
            loader = _pending[-1]()
            if loader is not None:
                loader()  # a loader that fails stays pending: the next check fails too, never unmasked
            _pending.pop()


@dataclass(frozen=True)
class Admin:
    """Who made a change: a CLI user, an administrator certificate, or a peer."""

    name: str
    issuer: str | None = None
    serial: str | None = None

    @classmethod
    def cli(cls) -> Admin:
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = "unknown"
        return cls(name=f"CLI user {user}")


@dataclass
class AuditEvent:
    """One audit log record (SignServer's system log shape)."""

    event: str
    module: str
    admin: Admin
    worker_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = "SUCCESS"
    time: float = 0.0
    id: int | None = None
    #: The node whose process wrote the record (set by the audit log when it writes; None for
    #: records from before nodes were recorded).
    node: str | None = None


def is_secret_key(key: str) -> bool:
    """Properties whose values are never shown (audit log, Auditor, ``getconfig``): declared
    secret by a plugin, or looking like a secret by name. ``GLOB.``/``NODE.<n>.`` and a worker
    name's prefix do not hide a declared name (``GLOB.KEYSTOREPASSWORD``)."""
    if _pending:
        _load_pending()
    upper = key.upper()
    if _SECRET.search(upper):
        return True
    return upper in _declared or upper.rpartition(".")[2] in _declared


def shown(key: str, value: str) -> str:
    """``value`` as the audit log may show it: masked for a secret ``key``."""
    return MASK if is_secret_key(key) else value


def config_diff(old: Mapping[str, str], set_props: Mapping[str, str], remove: Iterable[str]) -> dict[str, str]:
    """SET_WORKER_CONFIG details as SignServer writes them: ``added:K``, ``changed:K``, ``removed:K``."""
    details: dict[str, str] = {}
    for key in remove:
        k = key.upper()
        if k in old and k not in {s.upper() for s in set_props}:
            details[f"removed:{k}"] = shown(k, old[k])
    for key, value in set_props.items():
        k = key.upper()
        if k not in old:
            details[f"added:{k}"] = shown(k, value)
        elif old[k] != value:
            details[f"changed:{k}"] = shown(k, value)
    return details
