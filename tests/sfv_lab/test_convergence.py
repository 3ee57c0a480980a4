"""The convergence rule (sfv_lab.convergence) on stored FVD-while-training points."""
from __future__ import annotations

import pytest

from sfv_lab.convergence import judge


def points(fvds, every=100, half=2.0):
    return [{"step": every * (i + 1), "fvd": f, "fvd_lo": f - half, "fvd_hi": f + half} for i, f in enumerate(fvds)]


def test_a_curve_falling_more_than_its_interval_over_the_last_third_is_not_flat():
    v = judge(points([60, 55, 50, 45, 40, 35, 30, 25, 20]), 900)
    assert not v.flat and v.points == 3 and v.fall == pytest.approx(10.0) and v.half_width == 2.0
    assert v.text().startswith("still falling: fall 10.00 over steps > 600")


def test_noise_within_the_interval_and_a_rising_curve_are_flat():
    assert judge(points([60, 40, 30, 31, 29, 30.5, 30, 31, 29.5]), 900).flat
    assert judge(points([60, 40, 30, 31, 32, 33, 34, 35, 36]), 900).flat
    # the same fall is flat under a wider interval
    assert judge(points([60, 55, 50, 45, 40, 35, 30, 25, 20], half=12.0), 900).flat


def test_points_past_the_judged_length_are_ignored_and_too_few_points_are_not_flat():
    falling_then_flat = points([60, 55, 50, 45, 40, 35, 30, 25, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20])
    assert not judge(falling_then_flat, 900).flat and judge(falling_then_flat, 1800).flat
    short = judge(points([60, 40, 30, 30]), 400)
    assert not short.flat and short.fall is None and "too few points" in short.text()


def test_a_failed_evaluation_is_no_point_and_repeated_steps_count_once():
    pts = points([60, 40, 30, 31, 29, 30.5, 30, 31, 29.5])
    pts[-1] = {"step": 900, "fvd": None, "fvd_lo": None, "fvd_hi": None}       # the monitor's failed evaluation
    v = judge(pts, 900)
    assert v.points == 2 and v.fall is None and not v.flat
    same_step = [{"step": 900, "fvd": f, "fvd_lo": f - 1, "fvd_hi": f + 1} for f in (30, 31, 32)]
    assert judge(same_step, 900).fall is None
