"""Chunker/ChunkPolicy: a chunk is due when it holds max_size messages, when its messages' bytes
reach max_bytes, or when its oldest message is old enough. The clock and each message's bytes are
passed in, so each test is a table of (time, message, bytes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.chunker import Chunker, ChunkPolicy

Arrivals = list[tuple[float, str, int]]  # (now, message, bytes) in arrival order
LARGE = 1_000_000  # a byte limit no table of small messages reaches


def chunker_with(arrivals: Arrivals, max_size: int = 3, max_age_s: float = 1.0,
                 max_bytes: int = LARGE) -> Chunker[str]:
    chunker: Chunker[str] = Chunker(ChunkPolicy(max_size, max_age_s, max_bytes))
    for now, item, nbytes in arrivals:
        chunker.add(item, now, nbytes)
    return chunker


def drain(chunker: Chunker[str], now: float) -> list[list[str]]:
    chunks = []
    while (chunk := chunker.take_due(now)) is not None:
        chunks.append(chunk)
    return chunks


@pytest.mark.parametrize(
    ("max_size", "max_age_s", "max_bytes"),
    [
        pytest.param(0, 1.0, 100, id="size 0"),
        pytest.param(-1, 1.0, 100, id="negative size"),
        pytest.param(10, 0.0, 100, id="age 0"),
        pytest.param(10, -0.5, 100, id="negative age"),
        pytest.param(10, 1.0, 0, id="bytes 0"),
    ],
)
def test_an_invalid_policy_raises(max_size: int, max_age_s: float, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="invalid chunk policy"):
        ChunkPolicy(max_size, max_age_s, max_bytes)


def test_nothing_waiting_is_never_due() -> None:
    chunker = chunker_with([])
    assert (chunker.deadline(), chunker.take_due(1e9), len(chunker), chunker.bytes) == (None, None, 0, 0)


@pytest.mark.parametrize(
    ("arrivals", "now", "due"),
    [
        pytest.param([(0.0, "a", 1), (0.0, "b", 1)], 0.0, [], id="two of three: not full"),
        pytest.param([(0.0, "a", 1), (0.1, "b", 1), (0.2, "c", 1)], 0.2, [["a", "b", "c"]], id="full at three"),
        pytest.param(
            [(0.0, c, 1) for c in "abcdefg"],
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
    ("arrivals", "due", "left"),
    [
        pytest.param([(0.0, "a", 40), (0.0, "b", 59)], [], 99, id="99 of 100 bytes: not due"),
        pytest.param([(0.0, "a", 40), (0.0, "b", 60)], [["a", "b"]], 0, id="exactly 100 bytes: due"),
        pytest.param([(0.0, "a", 40), (0.0, "b", 70)], [["a"]], 70,
                     id="past 100: the chunk stops before the message that crosses, which waits"),
        pytest.param([(0.0, "a", 250)], [["a"]], 0, id="one message over the limit goes alone"),
        pytest.param([(0.0, "a", 10), (0.0, "b", 250), (0.0, "c", 10)], [["a"], ["b"]], 10,
                     id="a large message between small ones: alone, the small ones around it apart"),
        pytest.param([(0.0, c, 30) for c in "abcdefg"], [["a", "b", "c"], ["d", "e", "f"]], 30,
                     id="the count limit is reached first"),
        pytest.param([(0.0, c, 50) for c in "abcde"], [["a", "b"], ["c", "d"]], 50,
                     id="the byte limit is reached first"),
    ],
)
def test_a_chunk_is_due_when_its_messages_bytes_reach_max_bytes(
    arrivals: Arrivals, due: list[list[str]], left: int
) -> None:
    chunker = chunker_with(arrivals, max_size=3, max_age_s=60.0, max_bytes=100)
    assert drain(chunker, 0.0) == due
    assert chunker.bytes == left


@pytest.mark.parametrize(
    ("arrivals", "now", "due"),
    [
        pytest.param([(10.0, "a", 1)], 10.999, [], id="oldest not old enough"),
        pytest.param([(10.0, "a", 1)], 11.0, [["a"]], id="oldest exactly max age"),
        pytest.param([(10.0, "a", 1), (10.9, "b", 1)], 11.0, [["a", "b"]], id="younger ones go with the oldest"),
        pytest.param([(10.0, "a", 1), (10.9, "b", 1)], 10.95, [], id="a later arrival does not reset the age"),
        pytest.param([(10.5, "a", 1)], 11.0, [], id="age counts from the first arrival"),
    ],
)
def test_a_chunk_is_due_when_its_oldest_message_is_max_age_old(
    arrivals: Arrivals, now: float, due: list[list[str]]
) -> None:
    assert drain(chunker_with(arrivals), now) == due


def test_the_deadline_is_the_oldest_arrival_plus_max_age() -> None:
    chunker = chunker_with([(10.0, "a", 1), (10.5, "b", 1)], max_age_s=0.25)
    assert chunker.deadline() == 10.25


def test_the_messages_left_after_a_full_chunk_age_from_their_own_arrival() -> None:
    arrivals = [(0.0, "a", 1), (0.9, "b", 1), (0.9, "c", 1), (0.9, "d", 1), (0.9, "e", 1)]
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
            [(0.00, "a", 1), (0.30, "b", 1), (1.00, None, 0), (1.10, "c", 1), (2.10, None, 0)],
            [["a", "b"], ["c"]],
            id="age, then age again",
        ),
        pytest.param(
            [(0.0, "a", 1), (0.1, "b", 1), (0.2, "c", 1), (0.3, "d", 1), (1.2, None, 0), (1.3, None, 0)],
            [["a", "b", "c"], ["d"]],
            id="size, then age",
        ),
        pytest.param(
            [(0.0, "a", 60), (0.1, "b", 60), (0.2, None, 0), (1.0, None, 0), (1.1, None, 0)],
            [["a"], ["b"]],
            id="bytes, then the one that crossed waits out its own age",
        ),
    ],
)
def test_a_timeline_of_arrivals_and_ticks_gives_these_chunks(
    timeline: list[tuple[float, str | None, int]], chunks: list[list[str]]
) -> None:
    """Each row is an arrival (a message and its bytes) or a tick (None) of the listener loop at `now`."""
    chunker: Chunker[str] = Chunker(ChunkPolicy(3, 1.0, 100))
    sent: list[list[str]] = []
    for now, item, nbytes in timeline:
        if item is not None:
            chunker.add(item, now, nbytes)
        sent.extend(drain(chunker, now))
    assert sent == chunks


def test_take_all_returns_everything_in_arrival_order_and_empties() -> None:
    chunker = chunker_with([(0.0, "a", 5), (0.1, "b", 7)])
    taken = chunker.take_all()
    assert taken == ["a", "b"]
    assert (len(chunker), chunker.bytes, chunker.deadline(), chunker.take_all()) == (0, 0, None, [])
    taken.append("x")
    assert len(chunker) == 0


def test_a_taken_chunk_is_not_changed_by_later_arrivals() -> None:
    chunker = chunker_with([(0.0, "a", 1), (0.0, "b", 1), (0.0, "c", 1)])
    chunk = chunker.take_due(0.0)
    chunker.add("d", 0.5, 1)
    assert chunk == ["a", "b", "c"]
    assert chunker.deadline() == 1.5


def test_take_out_keeps_the_others_with_their_arrival_and_bytes() -> None:
    chunker = chunker_with([(0.0, "old-1", 10), (0.5, "new", 20), (0.7, "old-2", 30)], max_bytes=100)
    assert chunker.take_out(lambda item: item.startswith("old")) == ["old-1", "old-2"]
    assert (len(chunker), chunker.bytes, chunker.deadline()) == (1, 20, 1.5)


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 8), st.integers(1, 400))
def test_every_chunk_keeps_within_both_limits_unless_it_is_one_message(
    sizes: list[int], max_size: int, max_bytes: int
) -> None:
    chunker: Chunker[int] = Chunker(ChunkPolicy(max_size, 1.0, max_bytes))
    chunks: list[list[int]] = []
    for i, size in enumerate(sizes):
        chunker.add(i, 0.0, size)
        while (chunk := chunker.take_due(0.0)) is not None:
            chunks.append(chunk)
        assert len(chunker) < max_size and chunker.bytes < max_bytes  # nothing due is left waiting
    chunks.append(chunker.take_all())
    assert [i for chunk in chunks for i in chunk] == list(range(len(sizes)))  # all, once, in order
    for chunk in chunks[:-1]:
        assert 1 <= len(chunk) <= max_size
        assert len(chunk) == 1 or sum(sizes[i] for i in chunk) <= max_bytes
    assert chunker.bytes == 0


def test_staged_items_are_a_prefix_that_chunks_take_first_and_take_out_leaves() -> None:
    chunker = chunker_with([(0.0, "a", 1), (0.0, "b", 1)], max_size=3)
    chunker.mark_staged()
    chunker.add("c", 0.1, 1)
    chunker.add("d", 0.1, 1)
    assert chunker.unstaged() == ["c", "d"]
    assert chunker.take_out(lambda item: item in ("a", "c")) == ["c"]  # "a" is staged: it stays
    assert chunker.take_due(0.2) == ["a", "b", "d"] and chunker.taken_staged == 2 and chunker.staged == 0


def test_a_chunk_shorter_than_the_staged_prefix_leaves_the_rest_staged() -> None:
    chunker = chunker_with([(0.0, "a", 1), (0.0, "b", 1), (0.0, "c", 1), (0.0, "d", 1)], max_size=3)
    chunker.mark_staged()
    assert chunker.take_due(0.0) == ["a", "b", "c"] and chunker.taken_staged == 3
    assert chunker.staged == 1 and chunker.take_all() == ["d"] and chunker.taken_staged == 1
