"""The TimeStampSigner's properties, read once when the worker loads (SignServer's names,
defaults and messages). Every problem is collected, so the worker is OFFLINE with all of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from asn1crypto import core, x509

from signpeer_core.api import SignpeerError, WorkerConfig, parse_dn

#: ACCEPTEDALGORITHMS names (SignServer's list) → digest OIDs.
ALGORITHMS = {
    "GOST3411": "1.2.643.2.2.9", "MD5": "1.2.840.113549.2.5", "SHA1": "1.3.14.3.2.26",
    "SHA224": "2.16.840.1.101.3.4.2.4", "SHA256": "2.16.840.1.101.3.4.2.1", "SHA384": "2.16.840.1.101.3.4.2.2",
    "SHA512": "2.16.840.1.101.3.4.2.3", "RIPEMD128": "1.3.36.3.2.2", "RIPEMD160": "1.3.36.3.2.1",
    "RIPEMD256": "1.3.36.3.2.3",
}
#: Digest length per OID: a message imprint of another length is malformed.
DIGEST_SIZES = {
    "1.2.643.2.2.9": 32, "1.2.840.113549.2.5": 16, "1.3.14.3.2.26": 20, "2.16.840.1.101.3.4.2.4": 28,
    "2.16.840.1.101.3.4.2.1": 32, "2.16.840.1.101.3.4.2.2": 48, "2.16.840.1.101.3.4.2.3": 64,
    "1.3.36.3.2.2": 16, "1.3.36.3.2.1": 20, "1.3.36.3.2.3": 32,
}
#: CERTIFICATE_DIGEST_ALGORITHM spellings → asn1crypto digest names.
CERT_DIGESTS = {"SHA1": "sha1", "SHA224": "sha224", "SHA256": "sha256", "SHA384": "sha384", "SHA512": "sha512"}
TIMESOURCES = ("", "org.signserver.server.LocalComputerTimeSource", "LocalComputerTimeSource")
DEFAULT_MAXSERIALNUMBERLENGTH = 8


def is_oid(value: str) -> bool:
    try:
        core.ObjectIdentifier(value).dump()
    except (ValueError, TypeError):
        return False
    return True


def _oids(value: str) -> set[str]:
    return {part.strip() for part in value.split(";") if part.strip()}


@dataclass
class TsaConfig:
    """What the properties say; ``errors`` lists what is wrong with them."""

    default_policy: str = ""
    accepted_algorithms: set[str] = field(default_factory=lambda: set(ALGORITHMS.values()))
    accepted_policies: set[str] | None = None  #: None: any policy (ACCEPTANYPOLICY=true)
    accepted_extensions: set[str] = field(default_factory=set)
    accuracy: dict[str, int] = field(default_factory=dict)  #: asn1crypto Accuracy fields
    ordering: bool = False
    tsa_name: x509.GeneralName | None = None
    tsa_from_cert: bool = False
    include_status_string: bool = True
    include_signing_time: bool = True
    include_algorithm_protection: bool = True
    include_issuer_serial: bool = True
    certificate_digest: str = "sha256"
    require_valid_chain: bool = False
    verify_token: bool = True
    max_serial_length: int = DEFAULT_MAXSERIALNUMBERLENGTH
    errors: list[str] = field(default_factory=list)


def _strict_bool(config: WorkerConfig, key: str, default: bool, message: str, errors: list[str]) -> bool:
    """SignServer's strict booleans: true or false (any case), else ``message``."""
    raw = config.get_str(key)
    if not raw:
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    errors.append(message)
    return default


def _bool(config: WorkerConfig, key: str, default: bool, errors: list[str]) -> bool:
    try:
        return config.get_bool(key, default)
    except SignpeerError as exc:
        errors.append(exc.message)
        return default


def read_config(config: WorkerConfig) -> TsaConfig:
    """The TSA properties of ``config``; problems go to ``TsaConfig.errors``."""
    c = TsaConfig()
    errors = c.errors
    if config.get_str("TIMESOURCE") not in TIMESOURCES:
        errors.append(f"Could not create time source: TIMESOURCE {config.get_str('TIMESOURCE')!r} is not supported "
                      "(only org.signserver.server.LocalComputerTimeSource)")
    policy = config.get_str("DEFAULTTSAPOLICYOID")
    if not policy:
        errors.append("No default TSA policy OID has been configured")
    elif not is_oid(policy):
        errors.append(f"TSA policy OID {policy} is invalid")
    else:
        c.default_policy = policy
    algorithms = config.get_str("ACCEPTEDALGORITHMS")
    if algorithms:
        names = [a.strip().upper() for a in algorithms.split(";") if a.strip()]
        unknown = [a for a in names if a not in ALGORITHMS]
        if unknown:
            errors.append(f"ACCEPTEDALGORITHMS: unsupported algorithm(s) {', '.join(unknown)}; "
                          f"supported: {', '.join(ALGORITHMS)}")
        c.accepted_algorithms = {ALGORITHMS[a] for a in names if a in ALGORITHMS}
    any_policy = _strict_bool(config, "ACCEPTANYPOLICY", False, "Illegal value for ACCEPTANYPOLICY: "
                              + config.get_str("ACCEPTANYPOLICY"), errors)
    has_policies = "ACCEPTEDPOLICIES" in config  # set but empty: no policy may be requested
    if any_policy and has_policies:
        errors.append("Can not set ACCEPTANYPOLICY to true and ACCEPTEDPOLICIES at the same time")
    elif not any_policy and not has_policies:
        errors.append("Must specify either ACCEPTEDPOLICIES or ACCEPTANYPOLICY true")
    if has_policies and not any_policy:
        c.accepted_policies = _oids(config["ACCEPTEDPOLICIES"])
        bad = sorted(p for p in c.accepted_policies if not is_oid(p))
        if bad:
            errors.append(f"ACCEPTEDPOLICIES: not an object identifier: {', '.join(bad)}")
    c.accepted_extensions = _oids(config.get_str("ACCEPTEDEXTENSIONS"))
    bad = sorted(e for e in c.accepted_extensions if not is_oid(e))
    if bad:
        errors.append(f"ACCEPTEDEXTENSIONS: not an object identifier: {', '.join(bad)}")
    for key, name, limit in (("ACCURACYSECONDS", "seconds", None), ("ACCURACYMILLIS", "millis", 999),
                             ("ACCURACYMICROS", "micros", 999)):
        raw = config.get_str(key)
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            errors.append(f"{key} must be a whole number, got {raw!r}")
            continue
        if value < (0 if name == "seconds" else 1) or (limit is not None and value > limit):
            errors.append(f"{key} must be between {0 if name == 'seconds' else 1} and {limit or 'any'}, got {value}")
            continue
        c.accuracy[name] = value
    c.ordering = _bool(config, "ORDERING", False, errors)
    tsa = config.get_str("TSA")
    c.tsa_from_cert = _bool(config, "TSA_FROM_CERT", False, errors)
    if tsa and c.tsa_from_cert:
        errors.append("Can not set TSA_FROM_CERT to true and set TSA worker property at the same time")
    elif tsa:
        try:
            c.tsa_name = x509.GeneralName({"directory_name": x509.Name.load(parse_dn(tsa).public_bytes())})
        except (SignpeerError, ValueError) as exc:
            errors.append(f"TSA is not a distinguished name: {getattr(exc, 'message', exc)}")
    c.include_status_string = _bool(config, "INCLUDESTATUSSTRING", True, errors)
    c.include_signing_time = _bool(config, "INCLUDESIGNINGTIMEATTRIBUTE", True, errors)
    c.include_algorithm_protection = _bool(config, "INCLUDECMSALGORITHMPROTECTATTRIBUTE", True, errors)
    c.include_issuer_serial = _strict_bool(config, "INCLUDE_CERTID_ISSUERSERIAL", True,
                                           "Illegal value for property INCLUDE_CERTID_ISSUERSERIAL", errors)
    digest = config.get_str("CERTIFICATE_DIGEST_ALGORITHM", "SHA256")
    if digest.upper().replace("-", "") in CERT_DIGESTS:
        c.certificate_digest = CERT_DIGESTS[digest.upper().replace("-", "")]
    else:
        errors.append(f"Unsupported certificate digest algorithm: {digest}")
    c.require_valid_chain = _bool(config, "REQUIREVALIDCHAIN", False, errors)
    c.verify_token = _strict_bool(config, "VERIFY_TOKEN_SIGNATURE", True, "Incorrect value for VERIFY_TOKEN_SIGNATURE",
                                  errors)
    raw = config.get_str("MAXSERIALNUMBERLENGTH")
    if raw:
        try:
            length = int(raw)
        except ValueError:
            errors.append(f'Maximum serial number length specified is invalid: "{raw}"')
        else:
            if length > 20:
                errors.append(f"Maximum serial number length specified is too large: {length}")
            elif length < 8:
                errors.append(f"Maximum serial number length specified is too small: {length}")
            else:
                c.max_serial_length = length
    return c
