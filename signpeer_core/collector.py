"""How a server process uses Python's garbage collector: what start-up loaded is frozen until
the first reload (:func:`freeze_startup`, :func:`thaw`).

A full (generation 2) collection visits every container object the process holds. Most of them
come from start-up and live as long as the process: the imported modules of the core and the
plugins (about 100,000 objects before any worker), then the loaded workers. Measured in process
(``docs/performance.md``, "Round 10"), one full collection takes about 60–80 ms with 1 to 10,000
workers on the project's 2-core machine; CPython runs one whenever enough objects have survived
younger collections, and :class:`~signpeer_core.memorytrim.MemoryTrimmer` runs one after a burst
of connections. On a busy server that is a pause of the event loop, and every request in flight
waits for it.

:func:`freeze_startup` collects once and then moves every object alive at the end of start-up
into the collector's permanent generation (:func:`gc.freeze`), which later collections skip: a
full collection then visits only what was made after start-up. Frozen objects are still freed
by reference counting, but a reference *cycle* among them would never be collected, and some
workers hold one (a one-time worker and its token, a worker and its CA connector). So the first
reload that replaces workers (one or all, :class:`~signpeer_core.runtime.Runtime`) calls
:func:`thaw`: the frozen objects go back to the oldest generation, where the next full collection
frees the replaced workers' cycles. A server that does not reload keeps the benefit; one that
reloads loses it at its first reload and then collects as CPython does by default.

Only a server process freezes (``signpeer serve``, each process of ``--workers N``): the app's
lifespan calls :func:`freeze_startup` when :func:`~signpeer_core.app.create_app` is asked to.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger("signpeer.server")

_lock = threading.Lock()
_frozen = False  # this process froze start-up and has not thawed since


def freeze_startup() -> int:
    """Collect what start-up left as garbage, then freeze everything alive; returns how many
    objects the permanent generation holds. Call it once start-up is over and before requests
    arrive (objects of requests in flight would be frozen with it)."""
    global _frozen
    started = time.perf_counter()
    with _lock:
        gc.collect()
        gc.freeze()
        _frozen = True
        frozen = gc.get_freeze_count()
    log.info("start-up's %d objects frozen for the garbage collector in %.0f ms: full collections skip them "
             "until the first reload", frozen, (time.perf_counter() - started) * 1000)
    return frozen


def thaw() -> None:
    """Give what :func:`freeze_startup` froze back to the collector (a reload replaced workers
    that may sit in reference cycles); nothing when this process froze nothing or thawed
    already. Cheap: the permanent generation is joined to the oldest one as a list."""
    global _frozen
    if not _frozen:
        return
    with _lock:
        if not _frozen:
            return
        gc.unfreeze()
        _frozen = False
    log.info("start-up's objects thawed for the garbage collector: a reload replaced workers")
