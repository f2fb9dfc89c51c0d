"""Request options: the request metadata a signer reads as instructions, checked, never ignored.

SignServer's signers take some of their settings from the request when the worker allows it
(``ALLOW_..._OVERRIDE``). The names below are such options; a worker that does not support one
(or does not allow the override) refuses a request carrying it with 400, so a client never gets
a signature made differently from what it asked for. Other metadata (free-form values that
templates or the worker log may use) passes through untouched.

CMSSigner's options (SignServer's names and semantics):

* ``DETACHEDSIGNATURE`` (``true``/``false``): leave the content out; a value other than the
  worker's ``DETACHEDSIGNATURE`` needs ``ALLOW_DETACHEDSIGNATURE_OVERRIDE=true``.
* ``USING_CLIENTSUPPLIED_HASH`` (``true``/``false``): the request data is the digest of the
  content, computed by the client with ``CLIENTSIDE_HASHDIGESTALGORITHM`` (one of the worker's
  ``ACCEPTED_HASH_DIGEST_ALGORITHMS``); a value other than ``CLIENTSIDEHASHING`` needs
  ``ALLOW_CLIENTSIDEHASHING_OVERRIDE=true``. A client-supplied hash makes a detached signature
  whose ``messageDigest`` attribute is that hash.
* ``CONTENTOID``: the content type (an OID) of the SignedData; other than the worker's
  ``CONTENTOID`` (default ``1.2.840.113549.1.7.1``, id-data) needs ``ALLOW_CONTENTOID_OVERRIDE=true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from signpeer_core.cms import DATA_OID
from signpeer_core.config import FALSE_VALUES, TRUE_VALUES, WorkerConfig
from signpeer_core.errors import BadRequestError, ConfigurationError

DETACHEDSIGNATURE = "DETACHEDSIGNATURE"
USING_CLIENTSUPPLIED_HASH = "USING_CLIENTSUPPLIED_HASH"
CLIENTSIDE_HASHDIGESTALGORITHM = "CLIENTSIDE_HASHDIGESTALGORITHM"
CONTENTOID = "CONTENTOID"

#: Every request metadata key that is an instruction to a signer (upper case).
REQUEST_OPTIONS = frozenset({DETACHEDSIGNATURE, USING_CLIENTSUPPLIED_HASH, CLIENTSIDE_HASHDIGESTALGORITHM, CONTENTOID})

#: id-data, the content type of a SignedData unless CONTENTOID says otherwise.

#: Digest algorithms a client may hash with, by SignServer's spellings (SHA-256, SHA256), as
#: hashlib names, with their digest sizes.
DIGESTS = {"SHA1": ("sha1", 20), "SHA224": ("sha224", 28), "SHA256": ("sha256", 32),
           "SHA384": ("sha384", 48), "SHA512": ("sha512", 64)}

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]{0,18})){1,40}$")


_NO_OPTIONS: dict[str, str] = {}


def request_options(metadata: dict[str, str]) -> dict[str, str]:
    """The request options present in ``metadata``, keyed by upper-case name (do not modify)."""
    if not metadata:
        return _NO_OPTIONS
    return {key.upper(): value for key, value in metadata.items() if key.upper() in REQUEST_OPTIONS}


def refuse_options(worker: str, options: dict[str, str], supported: frozenset[str] = frozenset()) -> None:
    """400 for a request option the worker does not support (it would otherwise be ignored)."""
    unsupported = sorted(set(options) - supported)
    if unsupported:
        raise BadRequestError(f"worker '{worker}' does not support the request option(s) {', '.join(unsupported)}; "
                              "leave them out of the request metadata")


def digest_name(value: str) -> str:
    """``SHA-256``/``sha256``/``SHA256`` → ``SHA256``; KeyError for an unknown digest."""
    key = value.strip().upper().replace("-", "")
    if key not in DIGESTS:
        raise KeyError(value)
    return key


def _bool_option(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise BadRequestError(f"request option {name} must be true or false, not {value!r}")


def check_oid(text: str, what: str) -> str:
    value = text.strip()
    if not _OID.match(value):
        raise BadRequestError(f"{what} must be an object identifier in dotted form (e.g. {DATA_OID}), not {text!r}")
    return value


@dataclass(frozen=True)
class CmsOptions:
    """How one CMS request is signed, after the worker's settings and the request's options."""

    detached: bool
    content_oid: str
    client_digest: str | None  # SHA256 etc.: the request data is that digest of the content


class CmsSettings:
    """A CMSSigner's configured options and overrides (read once at load; errors make it OFFLINE)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.detached = config.get_bool("DETACHEDSIGNATURE")
        self.allow_detached_override = config.get_bool("ALLOW_DETACHEDSIGNATURE_OVERRIDE")
        self.client_hashing = config.get_bool("CLIENTSIDEHASHING")
        self.allow_client_hashing_override = config.get_bool("ALLOW_CLIENTSIDEHASHING_OVERRIDE")
        self.allow_content_oid_override = config.get_bool("ALLOW_CONTENTOID_OVERRIDE")
        try:
            self.content_oid = check_oid(config.get_str("CONTENTOID", DATA_OID), "CONTENTOID")
        except BadRequestError as exc:
            raise ConfigurationError(exc.message) from None
        accepted: list[str] = []
        for item in re.split(r"[;,]", config.get_str("ACCEPTED_HASH_DIGEST_ALGORITHMS")):
            if not item.strip():
                continue
            try:
                accepted.append(digest_name(item))
            except KeyError:
                raise ConfigurationError(f"ACCEPTED_HASH_DIGEST_ALGORITHMS: unknown digest algorithm '{item.strip()}'; "
                                         f"use {', '.join('SHA-' + d[3:] if d != 'SHA1' else 'SHA1' for d in DIGESTS)}") from None
        self.accepted_digests = tuple(accepted)
        if (self.client_hashing or self.allow_client_hashing_override) and not self.accepted_digests:
            raise ConfigurationError("CLIENTSIDEHASHING or ALLOW_CLIENTSIDEHASHING_OVERRIDE is true but "
                                     "ACCEPTED_HASH_DIGEST_ALGORITHMS is not set; list the digests clients may "
                                     "hash with, e.g. SHA-256,SHA-384,SHA-512")
        if self.client_hashing and not self.detached and not self.allow_detached_override:
            raise ConfigurationError("CLIENTSIDEHASHING=true needs DETACHEDSIGNATURE=true: a client-supplied hash "
                                     "can only make a detached signature")
        #: What a request without options gets (the hot path: no work per request), unless every
        #: request must name its digest algorithm.
        self._plain = None if self.client_hashing else CmsOptions(self.detached, self.content_oid, None)

    def resolve(self, worker: str, metadata: dict[str, str]) -> CmsOptions:
        """The options of one request; 400 for an option not allowed or not understood."""
        options = request_options(metadata)
        if not options and self._plain is not None:
            return self._plain
        detached, content_oid, client_hashing = self.detached, self.content_oid, self.client_hashing
        if options:
            # An option equal to the configured value asks for nothing different: accepted, as in SignServer.
            if DETACHEDSIGNATURE in options:
                wanted = _bool_option(DETACHEDSIGNATURE, options[DETACHEDSIGNATURE])
                if wanted != detached and not self.allow_detached_override:
                    raise BadRequestError(f"worker '{worker}' does not allow the request to set DETACHEDSIGNATURE "
                                          f"(it is {str(detached).lower()}; ALLOW_DETACHEDSIGNATURE_OVERRIDE=true "
                                          "allows it)")
                detached = wanted
            if USING_CLIENTSUPPLIED_HASH in options:
                wanted = _bool_option(USING_CLIENTSUPPLIED_HASH, options[USING_CLIENTSUPPLIED_HASH])
                if wanted != client_hashing and not self.allow_client_hashing_override:
                    raise BadRequestError(f"worker '{worker}' does not allow the request to set USING_CLIENTSUPPLIED_HASH "
                                          f"(CLIENTSIDEHASHING is {str(client_hashing).lower()}; "
                                          "ALLOW_CLIENTSIDEHASHING_OVERRIDE=true allows it)")
                client_hashing = wanted
            if CONTENTOID in options:
                wanted_oid = check_oid(options[CONTENTOID], "request option CONTENTOID")
                if wanted_oid != content_oid and not self.allow_content_oid_override:
                    raise BadRequestError(f"worker '{worker}' does not allow the request to set CONTENTOID "
                                          f"(it is {content_oid}; ALLOW_CONTENTOID_OVERRIDE=true allows it)")
                content_oid = wanted_oid
        client_digest: str | None = None
        algorithm = options.get(CLIENTSIDE_HASHDIGESTALGORITHM)
        if client_hashing:
            if algorithm is None:
                raise BadRequestError(f"worker '{worker}' expects a client-supplied hash: send the request option "
                                      f"CLIENTSIDE_HASHDIGESTALGORITHM (one of {', '.join(self.accepted_digests)})")
            try:
                client_digest = digest_name(algorithm)
            except KeyError:
                client_digest = None
            if client_digest not in self.accepted_digests:
                raise BadRequestError(f"digest algorithm {algorithm!r} is not accepted by worker '{worker}'; "
                                      f"use one of {', '.join(self.accepted_digests)}")
            if not detached:
                raise BadRequestError(f"a client-supplied hash can only make a detached signature; worker '{worker}' "
                                      "signs attached here (send DETACHEDSIGNATURE=true if it allows the override)")
        elif algorithm is not None:
            raise BadRequestError("CLIENTSIDE_HASHDIGESTALGORITHM was sent but the request data is not a hash "
                                  "(USING_CLIENTSUPPLIED_HASH is false); leave it out or send USING_CLIENTSUPPLIED_HASH=true")
        return CmsOptions(detached, content_oid, client_digest)
