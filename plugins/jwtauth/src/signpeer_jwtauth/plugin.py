"""The signpeer plugin of signpeer-jwtauth: registration only (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from signpeer_core.api import hookimpl

if TYPE_CHECKING:
    from signpeer_core.api import Authorizer

SIGNPEER_API_VERSION = "1.1"  # authorizer types, claims (plugin API 1.1)


@hookimpl
def signpeer_authorizer_types() -> list[type[Authorizer]]:
    from signpeer_jwtauth.authorizer import JwtAuthorizer

    return [JwtAuthorizer]
