"""SignServer's older and dump-only property forms, turned into signpeer's properties when a
property file is loaded (:mod:`signpeer_core.propertyfile`), as SignServer's ``setproperties``
turns them into its own calls:

* ``AUTHCLIENT<i>.SUBJECT.TYPE`` / ``.SUBJECT.VALUE`` / ``.ISSUER.TYPE`` / ``.ISSUER.VALUE`` /
  ``.DESCRIPTION`` (what ``dumpproperties`` writes for authorized clients) and the legacy
  ``AUTHCLIENT=<serial hex>;<issuer DN>``: rules added to (or, with a leading ``-``, removed from)
  ``AUTHORIZED_CLIENTS``;
* ``SIGNERCERTIFICATE`` (base64 DER, older dumps): the signer certificate (``SIGNERCERT``);
* the value ``_MASKED_`` (SignServer's placeholder for a secret in a dump): the stored value is
  kept, nothing is set;
* ``GLOB.WORKER<n>.CLASSPATH`` / ``GLOB.WORKER<n>.SIGNERTOKEN.CLASSPATH`` (SignServer 3 files):
  the worker's ``IMPLEMENTATION_CLASS`` / ``CRYPTOTOKEN_IMPLEMENTATION_CLASS`` (handled where
  global keys are read, :data:`GLOBAL_CLASSPATH`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from signpeer_core.auth import (
    AUTHORIZED_CLIENTS_PROPERTY,
    AuthorizedClient,
    parse_authorized_clients,
    serialize_authorized_clients,
)
from signpeer_core.errors import BadRequestError, ConfigurationError

MASKED = "_MASKED_"
#: ``GLOB.WORKER<n|GENIDn|name>.CLASSPATH`` and ``….SIGNERTOKEN.CLASSPATH``.
GLOBAL_CLASSPATH = re.compile(r"^WORKER(GENID\d{1,9}|\d+|[^.]+)\.(SIGNERTOKEN\.)?CLASSPATH$", re.IGNORECASE | re.ASCII)
_GEN2 = re.compile(r"^AUTHCLIENT(\d*)\.(SUBJECT\.TYPE|SUBJECT\.VALUE|ISSUER\.TYPE|ISSUER\.VALUE|DESCRIPTION)$")
_FIELDS = {"SUBJECT.TYPE": "subject_type", "SUBJECT.VALUE": "subject_value", "ISSUER.TYPE": "issuer_type",
           "ISSUER.VALUE": "issuer_value", "DESCRIPTION": "description"}


def classpath_property(token: bool) -> str:
    """The worker property a ``GLOB.WORKER<n>.[SIGNERTOKEN.]CLASSPATH`` key sets."""
    return "CRYPTOTOKEN_IMPLEMENTATION_CLASS" if token else "IMPLEMENTATION_CLASS"


def _legacy_rule(value: str) -> AuthorizedClient:
    serial, sep, issuer = value.partition(";")
    if not sep:
        raise BadRequestError(f"AUTHCLIENT={value!r}: expected <certificate serial hex>;<issuer DN>")
    return AuthorizedClient.create("CERTIFICATE_SERIALNO", serial, issuer)


def _gen2_rules(fields: Mapping[str, dict[str, str]]) -> list[AuthorizedClient]:
    rules = []
    for seq, parts in sorted(fields.items()):
        if not all(parts.get(k) for k in ("subject_type", "subject_value", "issuer_type", "issuer_value")):
            raise BadRequestError(f"Either all mandatory fields are not provided or same prefix is not provided "
                                  f"for AUTHCLIENT {seq} (SUBJECT.TYPE, SUBJECT.VALUE, ISSUER.TYPE, ISSUER.VALUE)")
        rules.append(AuthorizedClient.create(parts["subject_type"], parts["subject_value"], parts["issuer_value"],
                                             parts["issuer_type"], parts.get("description") or "Imported rule"))
    return rules


def translate_worker(wid: int, sets: dict[str, str], removes: list[str], removed_values: Mapping[str, str],
                     current: Mapping[str, str], messages: list[str]) -> None:
    """Rewrite one worker's changes from a file in place: the forms of the module docstring become
    signpeer properties; what was done is appended to ``messages``. ``removed_values``: the
    values the file gives with its ``-KEY`` lines (a rule to remove is named by them)."""
    for key, value in list(sets.items()):
        if value == MASKED:
            del sets[key]
            kept = "kept" if key in current else "not set (no stored value to keep)"
            messages.append(f"Property {key} of worker {wid} is {MASKED} in the file: the stored value is {kept}")
    if "SIGNERCERTIFICATE" in sets:
        sets["SIGNERCERT"] = sets.pop("SIGNERCERTIFICATE")
        messages.append(f"Uploading the signer certificate of worker {wid} (SIGNERCERTIFICATE)")
    if "SIGNERCERTIFICATE" in removes:
        removes.remove("SIGNERCERTIFICATE")
        messages.append("Removal of signing certificates isn't supported, skipped.")
    adds: dict[str, dict[str, str]] = {}
    drops: dict[str, dict[str, str]] = {}
    add_rules: list[AuthorizedClient] = []
    drop_rules: list[AuthorizedClient] = []
    for key in [k for k in sets if k.startswith("AUTHCLIENT")]:
        value = sets.pop(key)
        m = _GEN2.match(key)
        if m:
            adds.setdefault(m.group(1), {})[_FIELDS[m.group(2)]] = value
        elif key == "AUTHCLIENT":
            add_rules.append(_legacy_rule(value))
        else:
            raise BadRequestError(f"worker {wid}: unknown authorized client property {key}")
    for key in [k for k in removes if k.startswith("AUTHCLIENT")]:
        removes.remove(key)
        m = _GEN2.match(key)
        if m:
            drops.setdefault(m.group(1), {})[_FIELDS[m.group(2)]] = removed_values.get(key, "")
        elif key == "AUTHCLIENT":
            drop_rules.append(_legacy_rule(removed_values.get(key, "")))
    if not (adds or drops or add_rules or drop_rules):
        return
    add_rules += _gen2_rules(adds)
    drop_rules += _gen2_rules(drops)
    try:
        existing = parse_authorized_clients(sets.get(AUTHORIZED_CLIENTS_PROPERTY,
                                                     current.get(AUTHORIZED_CLIENTS_PROPERTY, "")))
    except ConfigurationError as exc:
        raise BadRequestError(f"worker {wid}: {exc.message}") from None
    keys = {r.key() for r in existing}
    for rule in add_rules:
        if rule.key() not in keys:
            existing.append(rule)
            keys.add(rule.key())
        messages.append(f"Adding Authorized Client with rule {rule.matchSubjectWithType}={rule.matchSubjectWithValue}, "
                        f"issuer {rule.matchIssuerWithValue} for worker {wid}")
    drop_keys = {r.key() for r in drop_rules}
    for rule in drop_rules:
        messages.append(f"Removing Authorized Client with rule {rule.matchSubjectWithType}="
                        f"{rule.matchSubjectWithValue} for worker {wid}")
    sets[AUTHORIZED_CLIENTS_PROPERTY] = serialize_authorized_clients([r for r in existing if r.key() not in drop_keys])
