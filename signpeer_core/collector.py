"""How a server process uses Python's garbage collector: what start-up loaded is frozen
(:func:`freeze_startup`).

A full (generation 2) collection visits every container object the process holds. Most of them
come from start-up and live as long as the process: the imported modules of the core and the
plugins (about 100,000 objects before any worker), then the loaded workers. Measured in process
(``docs/performance.md``, "Round 10"), one full collection takes about 63 ms with 1 worker, 66 ms
with 1,000 and 80 ms with 10,000 on the project's 2-core machine, and CPython runs one whenever
enough objects have survived younger collections. On a busy server that is a pause of the event
loop, and every request in flight waits for it.

:func:`freeze_startup` collects once and then moves every object alive at the end of start-up
into the collector's permanent generation (:func:`gc.freeze`), which later collections skip: a
full collection then visits only what was made after start-up. Frozen objects are still freed
when their last reference goes (reference counting is unchanged); only garbage *cycles* among
them would never be collected. Start-up's workers form none (a worker replaced by a reload, one
or all, is freed at once: ``tests/test_collector.py``), so nothing leaks; workers built later
(``reload all``) are left to the collector as usual.

Only a server process freezes (``signpeer serve``, each process of ``--workers N``): the app's
lifespan calls :func:`freeze_startup` when :func:`~signpeer_core.app.create_app` is asked to.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("signpeer.server")


def freeze_startup() -> int:
    """Collect what start-up left as garbage, then freeze everything alive; returns how many
    objects the permanent generation holds. Call it once start-up is over and before requests
    arrive (objects of requests in flight would be frozen with it)."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up's %d objects frozen for the garbage collector in %.0f ms: full collections skip them",
             frozen, (time.perf_counter() - started) * 1000)
    return frozen
