"""Claims of a verified token, as workers and authorizers read them.

A bearer-token authorizer (the JWT authorizer of ``signpeer-jwtauth``) puts the token's
verified claims on :attr:`SignRequest.claims <signpeer_core.workers.SignRequest.claims>`. Claim
rules and certificate templates name a claim by a *path*: ``email``, or for nested claims the
names joined by dots (``address.country``, Keycloak's ``realm_access.roles``), and list
elements by their index (``groups.0``). A claim whose own name contains a dot (``https://x/y``)
is found too: the longest name that matches is taken first.

* :func:`lookup_claim` — the value at a path (any JSON type), or :data:`MISSING`;
* :func:`claim_text` — a value as text for a certificate field (strings as they are, numbers
  in decimal, booleans ``true``/``false``), None for objects, lists and null;
* :func:`claim_values` — the values a claim rule compares with (a list gives each element).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: What :func:`lookup_claim` returns for a path the claims do not have.
MISSING: Any = object()


def lookup_claim(claims: Mapping[str, Any] | None, path: str) -> Any:
    """The value of the claim at ``path`` (see the module docstring), or :data:`MISSING`."""
    if not claims or not path:
        return MISSING
    if path in claims:
        return claims[path]
    return _walk(claims, path.split("."))


def _walk(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if isinstance(node, Mapping):
        # The longest prefix that is a key first: a claim name may itself contain dots.
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                found = _walk(node[key], parts[n:])
                if found is not MISSING:
                    return found
        return MISSING
    if isinstance(node, list) and parts[0].isdigit():
        index = int(parts[0])
        return _walk(node[index], parts[1:]) if index < len(node) else MISSING
    return MISSING


def claim_text(value: Any) -> str | None:
    """``value`` as certificate text; None when it has none (object, list, null, missing)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def claim_values(value: Any) -> list[str]:
    """The texts a claim rule compares with: each element of a list, else the value itself."""
    if value is MISSING:
        return []
    items = value if isinstance(value, list) else [value]
    return [t for t in (claim_text(v) for v in items) if t is not None]
