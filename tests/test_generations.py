"""Which workers the generations a process missed changed (``generations.changed_workers``), from
the scope rows (``config_scope.<generation % 64>``) as the store reads them."""

from __future__ import annotations

import json

from signpeer_core.storage import generations
from signpeer_core.storage.generations import KEPT_SCOPES, SCOPES


def rows(*scopes: tuple[int, list[int] | None]) -> list[tuple[str, str]]:
    return [(f"{SCOPES}{generation % KEPT_SCOPES}", json.dumps([generation, ids])) for generation, ids in scopes]


def test_the_missed_generations_name_their_workers() -> None:
    stored = rows(*((g, [g - 100]) for g in range(100, 164)))
    assert generations.changed_workers(stored, 161, 163) == {62, 63}
    assert generations.changed_workers(stored, 163, 163) == set()


def test_a_generation_of_everything_or_one_overwritten_means_everything() -> None:
    stored = rows((200, [1]), (201, None), (202, [2]))
    assert generations.changed_workers(stored, 201, 202) == {2}
    assert generations.changed_workers(stored, 200, 202) is None  # 201 changed everything
    # The slot of generation 138 (138 % 64 == 10) holds 202's: 138 is no longer remembered.
    assert generations.changed_workers(rows((202, [2])), 137, 138) is None


def test_only_the_slots_of_the_missed_generations_are_read() -> None:
    """A damaged row elsewhere does not matter; a damaged row of a missed generation counts as
    "everything"."""
    stored = rows((300, [7])) + [(f"{SCOPES}{301 % KEPT_SCOPES}", "not json")]
    assert generations.changed_workers(stored, 299, 300) == {7}
    assert generations.changed_workers(stored, 299, 301) is None
