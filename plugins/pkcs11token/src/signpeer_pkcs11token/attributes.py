"""Key generation attributes from worker properties.

Two spellings are read and merged (``KEYGENERATIONATTRIBUTES`` wins where both set a value):

* ``ATTRIBUTES`` — SignServer's (SunPKCS11) form, so existing property files keep working::

      attributes(generate, CKO_PRIVATE_KEY, *) = { CKA_EXTRACTABLE = false  CKA_SIGN = true }

  Entries may be separated by newlines, a literal ``\\n`` (property files written on one
  line), spaces or ``;``. The key-type field may be ``*``, ``CKK_RSA``, ``CKK_EC`` or
  ``CKK_EC_EDWARDS``; operations other than ``generate`` (or ``*``) are ignored.
* ``KEYGENERATIONATTRIBUTES`` — a simple list:
  ``PRIVATE.CKA_EXTRACTABLE=false; PUBLIC.CKA_PRIVATE=false; CKA_ALWAYS_AUTHENTICATE=false``.
  Without a ``PRIVATE.``/``PUBLIC.`` prefix an attribute applies to the private key.

Values: ``true``/``false``, decimal or ``0x`` integers, ``0h<hex>`` byte strings (SunPKCS11's
notation), anything else a string. Attributes the token sets itself (which object class,
label, id, that both halves are token objects, curve, size) are ignored, because finding a
key by its alias depends on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pkcs11 import Attribute

from signpeer_core.api import ConfigurationError

#: Set by the token itself; a configured value would break lookups by alias.
MANAGED = frozenset({
    Attribute.CLASS, Attribute.KEY_TYPE, Attribute.TOKEN, Attribute.LABEL, Attribute.ID,
    Attribute.EC_PARAMS, Attribute.MODULUS_BITS, Attribute.PUBLIC_EXPONENT,
})

_KEY_TYPES = {"*": None, "CKK_RSA": "RSA", "CKK_EC": "EC", "CKK_ECDSA": "EC", "CKK_EC_EDWARDS": "Ed25519"}
_BLOCK = re.compile(r"attributes\s*\(\s*([\w*]+)\s*,\s*([\w*]+)\s*,\s*([\w*]+)\s*\)\s*=\s*\{([^}]*)\}", re.I)
_PAIR = re.compile(r"(CKA_\w+)\s*=\s*([^\s;,{}]+)", re.I)


@dataclass
class KeyGenAttributes:
    """Extra attributes for the public and the private half, per key kind (``None``: all)."""

    entries: list[tuple[str | None, str, Attribute, Any]] = field(default_factory=list)

    def templates(self, kind: str) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
        """(public template, private template) for a key of ``kind`` (RSA, EC, Ed25519)."""
        public: dict[Attribute, Any] = {}
        private: dict[Attribute, Any] = {}
        for key_kind, half, attr, value in self.entries:
            if key_kind is None or key_kind == kind:
                (public if half == "PUBLIC" else private)[attr] = value
        return public, private


def parse_value(raw: str) -> Any:
    text = raw.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low.startswith("0h"):
        return bytes.fromhex(text[2:])
    if re.fullmatch(r"0x[0-9a-f]+", low):
        return int(low, 16)
    if re.fullmatch(r"\d+", low):
        return int(low)
    return text


def _attribute(name: str, prop: str) -> Attribute:
    try:
        return Attribute[name.upper().removeprefix("CKA_")]
    except KeyError:
        raise ConfigurationError(f"{prop}: unknown PKCS#11 attribute '{name}' (write e.g. CKA_EXTRACTABLE)") from None


def parse_attributes(attributes: str, simple: str) -> KeyGenAttributes:
    """Parse the ``ATTRIBUTES`` and ``KEYGENERATIONATTRIBUTES`` property values."""
    out = KeyGenAttributes()
    text = attributes.replace("\\n", "\n")
    if text.strip():
        blocks = list(_BLOCK.finditer(text))
        if not blocks:
            raise ConfigurationError(
                "ATTRIBUTES: expected blocks like 'attributes(generate, CKO_PRIVATE_KEY, *) = { CKA_SIGN = true }'")
        for m in blocks:
            op, cls, ktype, body = m.group(1).lower(), m.group(2).upper(), m.group(3).upper(), m.group(4)
            if op not in ("generate", "*"):
                continue
            if cls not in ("CKO_PUBLIC_KEY", "CKO_PRIVATE_KEY", "*"):
                raise ConfigurationError(f"ATTRIBUTES: object class must be CKO_PUBLIC_KEY or CKO_PRIVATE_KEY, not {cls}")
            if ktype not in _KEY_TYPES:
                raise ConfigurationError(f"ATTRIBUTES: key type must be *, CKK_RSA, CKK_EC or CKK_EC_EDWARDS, not {ktype}")
            halves = ("PUBLIC", "PRIVATE") if cls == "*" else (cls.removeprefix("CKO_").removesuffix("_KEY"),)
            for name, value in _PAIR.findall(body):
                attr = _attribute(name, "ATTRIBUTES")
                if attr not in MANAGED:
                    for half in halves:
                        out.entries.append((_KEY_TYPES[ktype], half, attr, parse_value(value)))
    for item in re.split(r"[;,\n]+", simple):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigurationError(
                f"KEYGENERATIONATTRIBUTES: '{item.strip()}' is not NAME=VALUE; write e.g. PRIVATE.CKA_EXTRACTABLE=false")
        name, value = (part.strip() for part in item.split("=", 1))
        half = "PRIVATE"
        prefix, _, rest = name.partition(".")
        if rest:
            if prefix.upper() not in ("PUBLIC", "PRIVATE"):
                raise ConfigurationError(f"KEYGENERATIONATTRIBUTES: prefix must be PUBLIC. or PRIVATE., not '{prefix}.'")
            half, name = prefix.upper(), rest
        attr = _attribute(name, "KEYGENERATIONATTRIBUTES")
        if attr not in MANAGED:
            out.entries.append((None, half, attr, parse_value(value)))
    return out
