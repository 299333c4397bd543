"""The benchmark plot's throughput line: one-second points for short runs, averages for long ones."""

from __future__ import annotations

from bench.plot import averaged, window_for


def test_short_runs_keep_one_point_a_second() -> None:
    assert window_for(0) == 1
    assert window_for(120) == 1


def test_long_runs_are_averaged_to_at_most_120_points() -> None:
    assert window_for(121) == 2
    assert window_for(600) == 5
    assert window_for(601) == 6


def test_alternating_chunk_commits_average_to_the_steady_rate() -> None:
    t = [float(i) for i in range(10)]
    rates = [5600.0, 6400.0] * 5
    assert averaged(t, rates, 2) == ([0.5, 2.5, 4.5, 6.5, 8.5], [6000.0] * 5)


def test_a_partial_last_window_averages_what_it_has() -> None:
    assert averaged([0.0, 1.0, 2.0], [10.0, 20.0, 40.0], 2) == ([0.5, 2.0], [15.0, 40.0])


def test_width_one_leaves_the_points_as_they_are() -> None:
    assert averaged([0.0, 1.0], [3.0, 7.0], 1) == ([0.0, 1.0], [3.0, 7.0])
