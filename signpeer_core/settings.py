"""Deploy-time settings: data directory, database, listen address, TLS files, limits.

They come from ``<home>/signpeer.toml`` (written by ``signpeer init``) and are overridden by
``SIGNPEER_*`` environment variables and then by command-line options. This is the only
module that reads the environment (besides the plugin blocklist in :mod:`plugins`).

Run-time configuration (workers, global properties) lives in the database, not here.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from signpeer_core.errors import ConfigurationError

SETTINGS_FILE = "signpeer.toml"
DEFAULT_HOME = "~/.signpeer"


@dataclass(frozen=True)
class Settings:
    """Everything a process needs before it can open the database."""

    home: Path
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8443
    certfile: str = ""
    keyfile: str = ""
    client_cafiles: tuple[str, ...] = ()
    #: The names clients reach the server under, comma separated, ``host`` or ``host:port`` (the
    #: Admin Web accepts forms from these origins only); default: the server certificate's names.
    server_name: str = ""
    workers: int = 1
    #: ``off`` (default), ``auto`` or a CPU list: each server process held on one CPU (affinity.py).
    cpu_affinity: str = "off"
    max_body_size: int = 10 * 1024 * 1024
    timeout_keep_alive: int = 75
    #: Connection limits and timeouts (signpeer_core/connectionlimits.py, docs/security.md "Limits").
    max_connections: int = 0  #: per process; 0: as many as the open-file limit allows
    max_connections_per_address: int = 512  #: per process and client IP address; 0: no limit
    tls_handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    reload_poll_interval: float = 1.0
    log_file: str = ""
    log_level: str = "INFO"
    #: ``text`` (default) or ``json``: one JSON object a line (logconfig.py).
    log_format: str = "text"
    #: Serve ``/metrics`` and record metrics on the signing path (metrics.py).
    metrics: bool = True
    #: OpenTelemetry traces of signing requests (tracing.py, docs/monitoring.md "Tracing"): ``off``
    #: (default) or ``otlp`` (OTLP/HTTP; needs ``pip install signpeer-core[opentelemetry]``).
    tracing: str = "off"
    #: The OTLP/HTTP receiver, e.g. ``http://127.0.0.1:4318`` (``/v1/traces`` added when the URL has
    #: no path); empty: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``, else localhost.
    tracing_endpoint: str = ""
    #: ``service.name`` of the spans; empty: ``OTEL_SERVICE_NAME``, else ``signpeer``.
    tracing_service_name: str = ""
    #: The share of requests traced (0..1) when the client sent no sampled ``traceparent``.
    tracing_sample_ratio: float = 1.0
    node_id: str = field(default_factory=socket.gethostname)
    #: The data protection key's file (default: ``signpeer.key`` beside an SQLite database, else in
    #: the data directory); see storage/protection.py.
    key_file: str = ""
    #: The data protection key itself (``SIGNPEER_KEY`` only, never in the settings file).
    key: str = field(default="", repr=False)
    #: Set by ``signpeer serve`` for its own processes only (never in the settings file): the key
    #: that seals token activation codes shared between them (see activation.py).
    activation_secret: str = field(default="", repr=False)

    @property
    def database(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.home / 'signpeer.db'}"

    def path(self, value: str) -> Path:
        """Resolve a file setting relative to the data directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.home / p

    @property
    def tls_certfile(self) -> Path:
        return self.path(self.certfile or "tls/server.pem")

    @property
    def tls_keyfile(self) -> Path:
        return self.path(self.keyfile or "tls/server-key.pem")

    @property
    def tls_client_cafiles(self) -> list[Path]:
        return [self.path(f) for f in (self.client_cafiles or ("tls/client-ca.pem",))]


_ENV_KEYS = {
    "database_url": "SIGNPEER_DATABASE_URL",
    "host": "SIGNPEER_HOST",
    "port": "SIGNPEER_PORT",
    "certfile": "SIGNPEER_CERTFILE",
    "keyfile": "SIGNPEER_KEYFILE",
    "client_cafiles": "SIGNPEER_CLIENT_CAFILES",
    "server_name": "SIGNPEER_SERVER_NAME",
    "workers": "SIGNPEER_WORKERS",
    "cpu_affinity": "SIGNPEER_CPU_AFFINITY",
    "max_body_size": "SIGNPEER_MAX_BODY_SIZE",
    "timeout_keep_alive": "SIGNPEER_TIMEOUT_KEEP_ALIVE",
    "max_connections": "SIGNPEER_MAX_CONNECTIONS",
    "max_connections_per_address": "SIGNPEER_MAX_CONNECTIONS_PER_ADDRESS",
    "tls_handshake_timeout": "SIGNPEER_TLS_HANDSHAKE_TIMEOUT",
    "header_timeout": "SIGNPEER_HEADER_TIMEOUT",
    "body_timeout": "SIGNPEER_BODY_TIMEOUT",
    "reload_poll_interval": "SIGNPEER_RELOAD_POLL_INTERVAL",
    "log_file": "SIGNPEER_LOG_FILE",
    "log_level": "SIGNPEER_LOG_LEVEL",
    "log_format": "SIGNPEER_LOG_FORMAT",
    "metrics": "SIGNPEER_METRICS",
    "tracing": "SIGNPEER_TRACING",
    "tracing_endpoint": "SIGNPEER_TRACING_ENDPOINT",
    "tracing_service_name": "SIGNPEER_TRACING_SERVICE_NAME",
    "tracing_sample_ratio": "SIGNPEER_TRACING_SAMPLE_RATIO",
    "node_id": "SIGNPEER_NODE_ID",
    "activation_secret": "SIGNPEER_ACTIVATION_SECRET",
    "key_file": "SIGNPEER_KEY_FILE",
    "key": "SIGNPEER_KEY",
}


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "tuple[str, ...]":
            if isinstance(value, str):
                return tuple(v for v in value.split(os.pathsep) if v)
            return tuple(str(v) for v in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"setting '{name}' must be a {'boolean (true or false)' if kind == 'bool' else kind}, "
                                 f"got {value!r}") from exc


def home_from_env(home: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``--home``, else ``SIGNPEER_HOME``, else ``~/.signpeer``."""
    raw = home or os.environ.get("SIGNPEER_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def load_settings(home: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the file, then the environment, then ``overrides`` (None values ignored)."""
    home_path = home_from_env(home)
    values: dict[str, Any] = {}
    file = home_path / SETTINGS_FILE
    if file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{file} is not valid TOML: {exc}") from exc
        section = data.get("server", data)
        known = {f.name for f in fields(Settings)} - {"home", "activation_secret", "key"}
        for key, value in section.items():
            if isinstance(value, dict):
                continue
            if key not in known:
                raise ConfigurationError(f"{file}: unknown setting '{key}'; known: {', '.join(sorted(known))}")
            values[key] = _coerce(key, value)
    for key, env in _ENV_KEYS.items():
        if env in os.environ and os.environ[env] != "":
            values[key] = _coerce(key, os.environ[env])
    for key, value in overrides.items():
        if value is not None and value != () and value != []:
            values[key] = _coerce(key, value)
    return replace(Settings(home=home_path), **values)
