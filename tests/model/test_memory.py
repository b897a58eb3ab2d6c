"""`collect_only_new_objects`: collections inside scan only what was made inside, and nothing is lost on exit."""

from __future__ import annotations

import gc
import weakref

from model.memory import collect_only_new_objects


class _Node:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def _cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def test_a_cycle_made_inside_is_collected_inside_while_older_objects_are_frozen() -> None:
    assert gc.get_freeze_count() == 0
    with collect_only_new_objects():
        assert gc.get_freeze_count() > 0  # what was alive on entry is out of the collector's walk
        made = _cycle()
        gc.collect()
        assert made() is None
    assert gc.get_freeze_count() == 0


def test_a_cycle_alive_on_entry_that_dies_inside_is_collected_after_exit() -> None:
    holder = [_Node()]
    old = weakref.ref(holder[0])
    with collect_only_new_objects():
        holder.clear()
        gc.collect()
        assert old() is not None  # frozen: the walk inside does not see it
    gc.collect()
    assert old() is None


def test_nested_blocks_thaw_once_at_the_outermost_exit() -> None:
    with collect_only_new_objects():
        with collect_only_new_objects():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
