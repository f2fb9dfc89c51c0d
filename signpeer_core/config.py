"""Worker and global properties as SignServer has them: string values, case-insensitive keys.

Keys are stored upper-case. Global properties carry a scope prefix: ``GLOB.`` for every node,
``NODE.<node id>.`` for one node; :func:`global_value` looks a name up with node scope first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from signpeer_core.errors import ConfigurationError

TRUE_VALUES = {"true", "yes", "1", "on"}
FALSE_VALUES = {"false", "no", "0", "off", ""}

# Worker types (SignServer's TYPE property).
PROCESSABLE = "PROCESSABLE"
CRYPTO_WORKER = "CRYPTO_WORKER"


class WorkerConfig(Mapping[str, str]):
    """An immutable view of one worker's properties with case-insensitive keys."""

    def __init__(self, worker_id: int, props: Mapping[str, str]) -> None:
        self.worker_id = worker_id
        self._props = {k.upper(): v for k, v in props.items()}

    def __getitem__(self, key: str) -> str:
        return self._props[key.upper()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._props)

    def __len__(self) -> int:
        return len(self._props)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._props

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkerConfig) and other._props == self._props and other.worker_id == self.worker_id

    def __hash__(self) -> int:
        return hash((self.worker_id, frozenset(self._props.items())))

    @property
    def name(self) -> str:
        return self._props.get("NAME", f"Worker{self.worker_id}")

    def get_str(self, key: str, default: str = "") -> str:
        """The value, stripped; ``default`` when absent or blank."""
        value = self._props.get(key.upper(), "").strip()
        return value or default

    def get_bool(self, key: str, default: bool = False) -> bool:
        """A boolean property; anything but a recognised spelling is a configuration error."""
        raw = self._props.get(key.upper())
        if raw is None or raw.strip() == "":
            return default
        value = raw.strip().lower()
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
        raise ConfigurationError(f"worker '{self.name}': {key.upper()} must be true or false, got {raw!r}")

    def get_int(self, key: str, default: int) -> int:
        raw = self._props.get(key.upper(), "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"worker '{self.name}': {key.upper()} must be a whole number, got {raw!r}") from None

    def get_float(self, key: str, default: float) -> float:
        raw = self._props.get(key.upper(), "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(f"worker '{self.name}': {key.upper()} must be a number, got {raw!r}") from None

    def as_dict(self) -> dict[str, str]:
        return dict(self._props)


def is_true(value: str | None) -> bool:
    """SignServer's reading of a boolean: a case-insensitive ``true`` and nothing else."""
    return value is not None and value.strip().lower() == "true"


def global_key(scope: str, name: str, node_id: str) -> str:
    """The stored key of a global property for scope ``global``/``GLOB`` or ``node``/``NODE``."""
    scope_u = scope.strip().upper()
    name_u = name.strip().upper()
    for prefix in ("GLOB.", "NODE."):
        if name_u.startswith(prefix):
            return name_u
    if scope_u in ("GLOBAL", "GLOB", "GLOB."):
        return f"GLOB.{name_u}"
    if scope_u in ("NODE", "NODE."):
        return f"NODE.{node_id.upper()}.{name_u}"
    raise ConfigurationError(f"unknown scope '{scope}': use global or node")


def global_value(props: Mapping[str, str], name: str, node_id: str, default: str | None = None) -> str | None:
    """A global property: node scope wins over global scope."""
    name_u = name.upper()
    node = props.get(f"NODE.{node_id.upper()}.{name_u}")
    if node is not None:
        return node
    return props.get(f"GLOB.{name_u}", default)
