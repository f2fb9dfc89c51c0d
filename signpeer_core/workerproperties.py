"""Which worker properties signpeer reads, per worker and token type, and which of a worker's
properties it does not know (``getstatus`` and ``setproperty``/``setproperties`` warn about them,
so a migrating SignServer user sees what is ignored).

A worker knows: the properties every worker reads (:data:`COMMON`), the ``properties`` its worker
class declares, those of its crypto token class when it holds one, for a worker with a CA
connector the connector's, and for a plugin's ``AUTHTYPE`` the authorizer's (``<N>`` in a name is
an index: ``AUTHSERVER<N>.ISSUER`` covers ``AUTHSERVER1.ISSUER``). The table in ``docs/worker-properties.md`` is generated from the same
declarations (:func:`properties_table`; ``tests/test_worker_properties.py`` checks it is current).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from signpeer_core.auth import AUTHTYPE_ALIASES
from signpeer_core.errors import SignpeerError
from signpeer_core.tokens import PropertyDoc

if TYPE_CHECKING:
    from signpeer_core.plugins import Registry
    from signpeer_core.services import Services

#: Read for every worker, whatever its type (the runtime, authorization, the peer connector).
COMMON: tuple[PropertyDoc, ...] = (
    PropertyDoc("NAME", "— (required)", "the worker's name"),
    PropertyDoc("TYPE", "by the implementation", "PROCESSABLE or CRYPTO_WORKER"),
    PropertyDoc("IMPLEMENTATION_CLASS", "— (required)", "the worker type (signpeer name or SignServer class name)"),
    PropertyDoc("CRYPTOTOKEN_IMPLEMENTATION_CLASS", "—", "the worker's own crypto token type"),
    PropertyDoc("CRYPTOTOKEN", "—", "name of the crypto worker whose token this worker uses"),
    PropertyDoc("DISABLED", "false", "true makes the worker OFFLINE"),
    PropertyDoc("DISABLED_BY", "—", "who set DISABLED (ADMIN:<name> or PEER:<subject>; written by signpeer)"),
    PropertyDoc("AUTHTYPE", "CLIENTCERT", "CLIENTCERT (refuses everyone until a client is authorized), NOAUTH, "
                "USERNAME, or a plugin's authorizer type (JWT)"),
    PropertyDoc("AUTHORIZED_CLIENTS", "—", "client certificate rules (signpeer authorizedclients)"),
    PropertyDoc("ACCEPT_ALL_USERNAMES", "false", "AUTHTYPE=USERNAME: accept any user name"),
    PropertyDoc("ACCEPT_USERNAMES", "—", "AUTHTYPE=USERNAME: user names accepted without a password"),
    PropertyDoc("USER.<name>", "—", "AUTHTYPE=USERNAME: a user's password (plain, or SHA-256/SHA-512 hashed)"),
    PropertyDoc("DEFAULTKEY", "—", "alias of the key the worker uses (generatekey, testkey default)"),
    PropertyDoc("NEXTCERTSIGNKEY", "—", "alias of the next key while a renewal is pending"),
    PropertyDoc("KEYALG", "—", "default key algorithm of generatekey"),
    PropertyDoc("KEYSPEC", "—", "default key spec of generatekey"),
    PropertyDoc("REQUESTDN", "—", "subject DN of certificate requests made for the worker"),
    PropertyDoc("REQUESTSIGNATUREALGORITHM", "from the key", "signature algorithm of certificate requests"),
    PropertyDoc("PEERS_VISIBLE", "false", "list the worker as a key binding to CA peers"),
    PropertyDoc("PEERS_ISSUED", "—", "fingerprint of the certificate a CA peer issued (written by signpeer)"),
    PropertyDoc("PEERS_KEEPCHAIN", "false", "keep the configured chain when a CA peer installs a certificate"),
    PropertyDoc("SUPERSEDEDKEYS", "—", "keys replaced by renewals, with when (written by signpeer)"),
    PropertyDoc("SUPERSEDEDKEYS_GRACEPERIOD", "— (keep)", "seconds a superseded key is kept before it is removed"),
    PropertyDoc("SUPERSEDEDKEYS_KEEP", "— (all)", "how many of the newest superseded keys are always kept"),
)

#: Properties SignServer itself sets or reads on any worker that signpeer leaves alone without harm.
_IGNORED_QUIETLY = frozenset({"SIGNERCERTIFICATE"})


def _names(docs: Iterable[PropertyDoc]) -> set[str]:
    return {d.name.upper() for d in docs}


def _known(props: Mapping[str, str], registry: Registry) -> tuple[set[str], set[str]] | None:
    """(exact names, prefixes) a worker with these properties reads; None when its type is unknown."""
    names = _names(COMMON) | set(_IGNORED_QUIETLY)
    try:
        impl = props.get("IMPLEMENTATION_CLASS", "")
        if not impl:
            return None
        worker_cls = registry.worker_types.get(impl, "IMPLEMENTATION_CLASS")
        names |= _names(getattr(worker_cls, "properties", ()))
        token_impl = props.get("CRYPTOTOKEN_IMPLEMENTATION_CLASS", "")
        if token_impl:
            names |= _names(getattr(registry.token_types.get(token_impl, "CRYPTOTOKEN_IMPLEMENTATION_CLASS"),
                                    "properties", ()))
        connector = props.get("CACONNECTOR_IMPLEMENTATION", "")
        if connector:
            names |= _names(getattr(registry.ca_connectors.get(connector, "CACONNECTOR_IMPLEMENTATION"),
                                    "properties", ()))
        authtype = props.get("AUTHTYPE", "").strip()
        if authtype and authtype.upper() not in AUTHTYPE_ALIASES \
                and authtype in registry.authorizer_types:  # a plugin's authorizer (JWT) reads its own
            names |= _names(getattr(registry.authorizer_types.get(authtype, "AUTHTYPE"), "properties", ()))
    except SignpeerError:
        return None  # the type itself is the problem; getstatus says so
    prefixes = {n[:-len("<NAME>")] for n in names if n.endswith("<NAME>")}
    return names, prefixes


def _matches(key: str, names: set[str], prefixes: set[str]) -> bool:
    """Whether ``key`` is one of ``names`` (``<N>`` in a name stands for an index: AUTHSERVER1.ISSUER)."""
    if key in names or any(key.startswith(p) for p in prefixes):
        return True
    return any(_INDEXED.get(n, _compile(n)).fullmatch(key) for n in names if "<N>" in n)


_INDEXED: dict[str, re.Pattern[str]] = {}


def _compile(name: str) -> re.Pattern[str]:
    pattern = _INDEXED[name] = re.compile(re.escape(name).replace(re.escape("<N>"), "[0-9]+"))
    return pattern


def unknown_properties(props: Mapping[str, str], registry: Registry) -> list[str]:
    """The keys of ``props`` that the worker's type, token and connector do not read."""
    known = _known({k.upper(): v for k, v in props.items()}, registry)
    if known is None:
        return []
    names, prefixes = known
    return sorted(k for k in (k.upper() for k in props) if not _matches(k, names, prefixes))


def warning(worker_name: str, key: str) -> str:
    return f"property {key} is not used by signpeer for worker '{worker_name}' (ignored)"


def unknown_property_warnings(services: Services, worker_id: int) -> list[str]:
    """One warning per stored property of the worker that signpeer does not read."""
    props = services.store.worker_properties(worker_id)
    name = props.get("NAME", str(worker_id))
    return [warning(name, key) for key in unknown_properties(props, services.registry)]


def properties_table(registry: Registry) -> str:
    """Markdown: the properties each registered worker and token type reads (docs/worker-properties.md)."""
    lines = ["# Worker properties signpeer reads",
             "",
             "Generated from the code (`signpeer_core.workerproperties.properties_table`); any other property "
             "of a worker is reported by `getstatus` and `setproperty`/`setproperties` as not used.",
             "",
             "## Every worker",
             "",
             "| property | default | meaning |",
             "|---|---|---|"]
    lines += [f"| `{d.name}` | {d.default} | {d.meaning} |" for d in COMMON]
    sections = (("Worker type", registry.worker_types.primary), ("Crypto token type", registry.token_types.primary),
                ("CA connector", registry.ca_connectors.primary),
                ("Authorizer type (`AUTHTYPE`)", registry.authorizer_types.primary))
    for title, table in sections:
        for type_name in sorted(table):
            cls = table[type_name]
            if cls.__module__.startswith("signpeer_core.testing"):
                continue  # the test kit's types are not part of a server
            docs = tuple(getattr(cls, "properties", ()))
            aliases = ", ".join(f"`{a}`" for a in getattr(cls, "implementation_aliases", ()))
            lines += ["", f"## {title} `{type_name}`", ""]
            if aliases:
                lines += [f"Also named {aliases}.", ""]
            if not docs:
                lines.append("No properties of its own.")
                continue
            lines += ["| property | default | meaning |", "|---|---|---|"]
            lines += [f"| `{d.name}` | {d.default} | {d.meaning} |" for d in docs]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m signpeer_core.workerproperties > docs/worker-properties.md
    from signpeer_core.plugins import Registry as _Registry

    print(properties_table(_Registry()), end="")
