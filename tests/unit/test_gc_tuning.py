import gc
from collections.abc import Iterator

import pytest

from ingest_tasks.gc_tuning import YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_the_start_up_heap_and_collects_the_young_generation_less_often() -> None:
    gc.unfreeze()
    _, middle, old = gc.get_threshold()

    tune_gc()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert gc.isenabled()
