"""The services a process shares: settings, store, plugin registry, the worker runtime and its pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from signpeer_core import tracing
from signpeer_core.activation import ActivationRelay
from signpeer_core.pipeline import Pipeline
from signpeer_core.plugins import Registry
from signpeer_core.runtime import Runtime
from signpeer_core.settings import Settings
from signpeer_core.storage import Store, open_store
from signpeer_core.storage.protection import KeySource
from signpeer_core.workermetrics import SigningMetrics

T = TypeVar("T")


@dataclass
class Services:
    """Everything a worker, token, command or route may need, passed explicitly."""

    settings: Settings
    store: Store
    registry: Registry
    runtime: Runtime = field(init=False)
    activation: ActivationRelay = field(init=False)
    pipeline: Pipeline = field(init=False)
    #: The signing path's metrics; None when ``metrics = false``.
    metrics: SigningMetrics | None = field(init=False, default=None)
    _state: dict[type[Any], Any] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.runtime = Runtime(self)
        self.activation = ActivationRelay(self)
        if self.settings.metrics:
            self.metrics = SigningMetrics()
        # With tracing on in this process (tracing.start), the traced pipeline.
        self.pipeline = tracing.make_pipeline(self.runtime, self.metrics)

    def state(self, kind: type[T], factory: Callable[[], T] | None = None) -> T:
        """The one object of class ``kind`` that a plugin keeps for this process.

        A plugin's per-process state (a request hub, an endpoint's service object) lives here,
        keyed by its own class, instead of as attributes set on ``Services``. The first call
        makes it with ``factory`` (default: ``kind()``); later calls return the same object.
        """
        try:
            return self._state[kind]
        except KeyError:
            obj = factory() if factory is not None else kind()
            self._state[kind] = obj
            return obj

    def state_if_any(self, kind: type[T]) -> T | None:
        """The object :meth:`state` made for ``kind``, or None when none was made yet."""
        return self._state.get(kind)

    @classmethod
    def open(cls, settings: Settings, registry: Registry | None = None, load: bool = True) -> Services:
        """Open the database, load plugins and (by default) load the workers."""
        registry = registry or Registry()
        store = open_store(settings.database, registry.migration_sources(), KeySource.for_settings(settings),
                           settings.node_id)
        services = cls(settings=settings, store=store, registry=registry)
        if load:
            services.runtime.load()
        return services

    def close(self) -> None:
        self.runtime.close()
        self.store.close()
