"""Chunker/ChunkPolicy: a chunk is due when full or when its oldest message is old enough.
The clock is passed in, so each test is a table of arrival times."""

from __future__ import annotations

import pytest

from listener.chunker import Chunker, ChunkPolicy

Arrivals = list[tuple[float, str]]  # (now, message) in arrival order


def chunker_with(arrivals: Arrivals, max_size: int = 3, max_age_s: float = 1.0) -> Chunker[str]:
    chunker: Chunker[str] = Chunker(ChunkPolicy(max_size, max_age_s))
    for now, item in arrivals:
        chunker.add(item, now)
    return chunker


def drain(chunker: Chunker[str], now: float) -> list[list[str]]:
    chunks = []
    while (chunk := chunker.take_due(now)) is not None:
        chunks.append(chunk)
    return chunks


@pytest.mark.parametrize(
    ("max_size", "max_age_s"),
    [
        pytest.param(0, 1.0, id="size 0"),
        pytest.param(-1, 1.0, id="negative size"),
        pytest.param(10, 0.0, id="age 0"),
        pytest.param(10, -0.5, id="negative age"),
    ],
)
def test_an_invalid_policy_raises(max_size: int, max_age_s: float) -> None:
    with pytest.raises(ValueError, match="invalid chunk policy"):
        ChunkPolicy(max_size, max_age_s)


def test_nothing_waiting_is_never_due() -> None:
    chunker = chunker_with([])
    assert (chunker.deadline(), chunker.take_due(1e9), len(chunker)) == (None, None, 0)


@pytest.mark.parametrize(
    ("arrivals", "now", "due"),
    [
        pytest.param([(0.0, "a"), (0.0, "b")], 0.0, [], id="two of three: not full"),
        pytest.param([(0.0, "a"), (0.1, "b"), (0.2, "c")], 0.2, [["a", "b", "c"]], id="full at three"),
        pytest.param(
            [(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d"), (0.0, "e"), (0.0, "f"), (0.0, "g")],
            0.0,
            [["a", "b", "c"], ["d", "e", "f"]],
            id="seven: two full chunks, one message waits",
        ),
    ],
)
def test_a_chunk_is_due_when_it_holds_max_size_messages(
    arrivals: Arrivals, now: float, due: list[list[str]]
) -> None:
    chunker = chunker_with(arrivals)
    assert drain(chunker, now) == due
    assert len(chunker) == len(arrivals) - 3 * len(due)


@pytest.mark.parametrize(
    ("arrivals", "now", "due"),
    [
        pytest.param([(10.0, "a")], 10.999, [], id="oldest not old enough"),
        pytest.param([(10.0, "a")], 11.0, [["a"]], id="oldest exactly max age"),
        pytest.param([(10.0, "a"), (10.9, "b")], 11.0, [["a", "b"]], id="younger ones go with the oldest"),
        pytest.param([(10.0, "a"), (10.9, "b")], 10.95, [], id="a later arrival does not reset the age"),
        pytest.param([(10.5, "a")], 11.0, [], id="age counts from the first arrival"),
    ],
)
def test_a_chunk_is_due_when_its_oldest_message_is_max_age_old(
    arrivals: Arrivals, now: float, due: list[list[str]]
) -> None:
    assert drain(chunker_with(arrivals), now) == due


def test_the_deadline_is_the_oldest_arrival_plus_max_age() -> None:
    chunker = chunker_with([(10.0, "a"), (10.5, "b")], max_age_s=0.25)
    assert chunker.deadline() == 10.25


def test_the_messages_left_after_a_full_chunk_age_from_their_own_arrival() -> None:
    arrivals = [(0.0, "a"), (0.9, "b"), (0.9, "c"), (0.9, "d"), (0.9, "e")]
    chunker = chunker_with(arrivals)
    assert chunker.take_due(0.9) == ["a", "b", "c"]
    assert chunker.deadline() == 1.9
    assert chunker.take_due(1.0) is None
    assert chunker.take_due(1.9) == ["d", "e"]
    assert chunker.deadline() is None


@pytest.mark.parametrize(
    ("timeline", "chunks"),
    [
        pytest.param(
            [(0.00, "a"), (0.30, "b"), (1.00, None), (1.10, "c"), (2.10, None)],
            [["a", "b"], ["c"]],
            id="age, then age again",
        ),
        pytest.param(
            [(0.0, "a"), (0.1, "b"), (0.2, "c"), (0.3, "d"), (1.2, None), (1.3, None)],
            [["a", "b", "c"], ["d"]],
            id="size, then age",
        ),
    ],
)
def test_a_timeline_of_arrivals_and_ticks_gives_these_chunks(
    timeline: list[tuple[float, str | None]], chunks: list[list[str]]
) -> None:
    """Each row is an arrival (a message) or a tick (None) of the listener loop at time `now`."""
    chunker: Chunker[str] = Chunker(ChunkPolicy(3, 1.0))
    sent: list[list[str]] = []
    for now, item in timeline:
        if item is not None:
            chunker.add(item, now)
        sent.extend(drain(chunker, now))
    assert sent == chunks


def test_take_all_returns_everything_in_arrival_order_and_empties() -> None:
    chunker = chunker_with([(0.0, "a"), (0.1, "b")])
    taken = chunker.take_all()
    assert taken == ["a", "b"]
    assert (len(chunker), chunker.deadline(), chunker.take_all()) == (0, None, [])
    taken.append("x")
    assert len(chunker) == 0


def test_a_taken_chunk_is_not_changed_by_later_arrivals() -> None:
    chunker = chunker_with([(0.0, "a"), (0.0, "b"), (0.0, "c")])
    chunk = chunker.take_due(0.0)
    chunker.add("d", 0.5)
    assert chunk == ["a", "b", "c"]
    assert chunker.deadline() == 1.5
