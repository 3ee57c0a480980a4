"""The seed rule (sfv_lab.seeds) on stored numbers: summaries, each case of the rule, and the shipped R1
study (results/mini/r1_study.json), which its note calls not separable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfv_lab import seeds
from sfv_lab.seeds import SeedScore as S

R1_JSON = Path(__file__).resolve().parents[2] / "results" / "mini" / "r1_study.json"


def cell(*fvds, half=None):
    """Seeds 0.. with these FVDs, each with an interval of +-half (none when half is None)."""
    return [S(i, f, (f - half, f + half) if half is not None else None) for i, f in enumerate(fvds)]


def test_summary_is_mean_min_max_and_sample_sd():
    s = seeds.summary(cell(10.0, 12.0, 17.0))
    assert (s.n, s.mean, s.lo, s.hi) == (3, 13.0, 10.0, 17.0)
    assert s.sd == pytest.approx(3.605551, abs=1e-6)
    assert seeds.summary(cell(5.0)).sd is None and seeds.summary([]) is None
    assert seeds.spread_cells(cell(10.0, 12.0, 17.0)) == ["13.00", "10.00..17.00", "3.61"]
    assert seeds.spread_cells([]) == ["-", "-", "-"]


def test_every_seed_agreeing_by_its_interval_is_a_claim_even_with_overlapping_seed_ranges():
    x, y = cell(10.0, 30.0, 20.0, half=2.0), cell(15.0, 35.0, 25.0, half=2.0)   # each pair 5 apart, intervals disjoint
    assert seeds.summary(y).mean - seeds.summary(x).mean < 20.0                  # the means alone would not do
    assert seeds.compare(x, y, "a", "b") == "a beats b"
    assert seeds.compare(y, x, "b", "a") == "a beats b"


def test_a_seed_whose_intervals_overlap_does_not_count():
    x, y = cell(10.0, 30.0, 20.0, half=3.0), cell(15.0, 35.0, 25.0, half=3.0)   # each pair's intervals overlap
    assert seeds.compare(x, y) == seeds.NOT_SEPARABLE
    assert seeds.compare(cell(10.0, 30.0, 20.0), cell(15.0, 35.0, 25.0)) == "X beats Y"   # no intervals: FVDs


def test_means_further_apart_than_the_spread_are_a_claim_though_one_seed_disagrees():
    x, y = cell(10.0, 12.0, 30.0, half=1.0), cell(50.0, 52.0, 29.0, half=1.0)
    # seed 2 goes the other way; mean gap 26.33 > the larger width 23 (y: 29..52)
    assert seeds.compare(x, y) == "X beats Y"
    y_close = cell(40.0, 42.0, 29.0, half=1.0)           # mean gap 19.67 < the larger width 20 (x: 10..30)
    assert seeds.compare(x, y_close) == seeds.NOT_SEPARABLE


def test_fewer_than_three_paired_seeds_make_no_claim():
    far = cell(10.0, 11.0, half=0.5), cell(90.0, 91.0, half=0.5)
    assert seeds.compare(*far) == "fewer than 3 seeds (2)"
    x = cell(10.0, 11.0, 12.0, half=0.5)
    y = [S(0, 90.0), S(1, 91.0), S(5, 92.0)]                                     # seed 2 missing: 2 paired
    assert seeds.compare(x, y) == "fewer than 3 seeds (2)"


def test_verdicts_against_a_reference_cell():
    cells = {"base": cell(30.0, 31.0, 32.0, half=1.0), "good": cell(10.0, 11.0, 12.0, half=1.0),
             "same": cell(31.0, 30.0, 33.0, half=1.0), "short": cell(1.0, half=1.0)}
    assert seeds.verdicts(cells, "base") == {"base": "reference", "good": "good beats base",
                                             "same": seeds.NOT_SEPARABLE, "short": "fewer than 3 seeds (1)"}
    assert seeds.verdicts({"a": cell(1.0)}, "base") == {"a": "base not run"}


def test_the_shipped_r1_study_is_not_separable():
    runs = json.loads(R1_JSON.read_text())["runs"]
    cells = {r1: [seeds.seed_score(s, runs[f"r1-{r1}-s{s}"]) for s in (0, 1, 2)] for r1 in ("exact", "approx", "none")}
    # exact has the lower FVD at all three seeds, but at seeds 0 and 1 the intervals overlap
    assert all(a.fvd < b.fvd for a, b in zip(cells["exact"], cells["approx"]))
    for x, y in (("exact", "approx"), ("exact", "none"), ("approx", "none")):
        assert seeds.compare(cells[x], cells[y], x, y) == seeds.NOT_SEPARABLE, (x, y)
    s = seeds.summary(cells["approx"])
    assert (round(s.mean, 2), round(s.lo, 2), round(s.hi, 2), round(s.sd, 2)) == (42.81, 34.11, 57.62, 12.90)


def test_cells_with_other_seeds_are_judged_on_the_shared_ones_and_the_verdict_says_so():
    x = cell(10.0, 30.0, 20.0, 60.0, 70.0, half=2.0)          # seeds 3 and 4 make its mean worse than y's
    y = cell(15.0, 35.0, 25.0, half=2.0)
    assert seeds.compare(x, y, "a", "b") == "a beats b (on seeds 0, 1, 2)"
    assert seeds.compare(cell(10.0, 30.0, 20.0, half=2.0), y, "a", "b") == "a beats b"   # same seeds: no note
    assert seeds.compare(cell(10.0, 30.0, 20.0, 9.0, half=3.0), cell(15.0, 35.0, 25.0, half=3.0)) == \
        "not separable (on seeds 0, 1, 2)"


def test_an_empty_seed_list_is_refused_not_read_as_seed_0():
    import argparse

    from sfv_core.errors import UserError
    from sfv_lab.distill import cli_ablations

    with pytest.raises(UserError, match="--seeds ''"):
        cli_ablations(argparse.Namespace(out="x", steps=40, cells=None, num_videos=None, seeds=""))
