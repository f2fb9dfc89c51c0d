"""The services a process shares: settings, store, plugin registry, the worker runtime and its pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from signpeer_core.activation import ActivationRelay
from signpeer_core.pipeline import Pipeline
from signpeer_core.plugins import Registry
from signpeer_core.runtime import Runtime
from signpeer_core.settings import Settings
from signpeer_core.store import Store, open_store


@dataclass
class Services:
    """Everything a worker, token, command or route may need, passed explicitly."""

    settings: Settings
    store: Store
    registry: Registry
    runtime: Runtime = field(init=False)
    activation: ActivationRelay = field(init=False)
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.runtime = Runtime(self)
        self.activation = ActivationRelay(self)
        self.pipeline = Pipeline(self.runtime)

    @classmethod
    def open(cls, settings: Settings, registry: Registry | None = None, load: bool = True) -> Services:
        """Open the database, load plugins and (by default) load the workers."""
        services = cls(settings=settings, store=open_store(settings.database), registry=registry or Registry())
        if load:
            services.runtime.load()
        return services

    def close(self) -> None:
        self.runtime.close()
        self.store.close()
