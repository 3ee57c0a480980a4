"""The seed rule: a cell's FVD over training seeds, and when one cell may be said to beat another.

A cell is one training setting (a Table 2 / Table 3 / lambda cell, a shipped one-step row, an R1 variant)
trained at several seeds, each seed scored with its FVD and that score's 95% test-set interval.

``summary`` gives a cell's mean, its spread (min..max and the sample standard deviation) over its seeds.
``compare`` decides "X beats Y" (lower FVD is better) by this rule, on the seeds both cells have (paired by
seed):

- fewer than ``MIN_SEEDS`` (3) paired seeds: no claim, the verdict says how many seeds there are;
- X beats Y when it holds at every paired seed, where it holds at a seed when X's interval lies entirely
  below Y's (X's upper end < Y's lower end; without intervals: X's FVD < Y's FVD);
- or when the seed means differ by more than their spread: |mean X - mean Y| > max(max-min of X, max-min
  of Y), the larger of the two cells' min..max widths over the paired seeds;
- otherwise the two are "not separable".

Plain functions over stored numbers (no training, no scoring).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sfv_core.errors import UserError

MIN_SEEDS = 3
NOT_SEPARABLE = "not separable"


@dataclass(frozen=True)
class SeedScore:
    """One seed's FVD with its 95% test-set interval (None when the record has none)."""
    seed: int
    fvd: float
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    lo: float
    hi: float
    sd: float | None         # sample standard deviation; None under two seeds


def seed_score(seed: int, rec: dict) -> SeedScore:
    """A run's record (``fvd``, ``fvd_interval``) as one seed's score."""
    interval = rec.get("fvd_interval")
    return SeedScore(seed, float(rec["fvd"]), tuple(map(float, interval)) if interval else None)


def summary(scores: list[SeedScore]) -> Summary | None:
    """Mean, min..max and sample sd of the seeds' FVDs; None for no seeds."""
    if not scores:
        return None
    fvds = [s.fvd for s in scores]
    return Summary(n=len(fvds), mean=statistics.mean(fvds), lo=min(fvds), hi=max(fvds),
                   sd=statistics.stdev(fvds) if len(fvds) > 1 else None)


def _holds(x: SeedScore, y: SeedScore) -> bool:
    """X beats Y at this seed: X's interval entirely below Y's (the FVDs alone without intervals)."""
    if x.interval and y.interval:
        return x.interval[1] < y.interval[0]
    return x.fvd < y.fvd


def _beats(x: list[SeedScore], y: list[SeedScore]) -> bool:
    """The rule for ordered, paired lists of at least MIN_SEEDS seeds."""
    if all(_holds(a, b) for a, b in zip(x, y)):
        return True
    sx, sy = summary(x), summary(y)
    spread = max(sx.hi - sx.lo, sy.hi - sy.lo)
    return sy.mean - sx.mean > spread


def compare(x: list[SeedScore], y: list[SeedScore], x_name: str = "X", y_name: str = "Y") -> str:
    """The verdict on two cells by the module's rule: "X beats Y", "Y beats X", "not separable", or
    "fewer than 3 seeds (k)" when the cells share fewer than ``MIN_SEEDS`` seeds."""
    ys = {s.seed: s for s in y}
    seeds = sorted(s.seed for s in x if s.seed in ys)
    if len(seeds) < MIN_SEEDS:
        return f"fewer than {MIN_SEEDS} seeds ({len(seeds)})"
    xs = {s.seed: s for s in x}
    px, py = [xs[s] for s in seeds], [ys[s] for s in seeds]
    # judged on the shared seeds only: said when a cell has others (its mean and spread beside it cover them)
    on = "" if len(seeds) == len(x) == len(y) else f" (on seeds {', '.join(map(str, seeds))})"
    if _beats(px, py):
        return f"{x_name} beats {y_name}{on}"
    if _beats(py, px):
        return f"{y_name} beats {x_name}{on}"
    return NOT_SEPARABLE + on


def verdicts(cells: dict[str, list[SeedScore]], ref: str) -> dict[str, str]:
    """Each cell's verdict against the reference cell ``ref`` (its own row says "reference")."""
    out = {}
    for name, scores in cells.items():
        if name == ref:
            out[name] = "reference"
        elif ref not in cells:
            out[name] = f"{ref} not run"
        else:
            out[name] = compare(scores, cells[ref], name, ref)
    return out


def spread_cells(scores: list[SeedScore]) -> list[str]:
    """The table cells "mean", "min..max", "sd" of a cell ("-" where there is nothing to show)."""
    s = summary(scores)
    if s is None:
        return ["-", "-", "-"]
    return [f"{s.mean:.2f}", f"{s.lo:.2f}..{s.hi:.2f}", f"{s.sd:.2f}" if s.sd is not None else "-"]


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds 0,1,2`` as a tuple of distinct training seeds, in the order given."""
    try:
        out = tuple(dict.fromkeys(int(s) for s in text.split(",")))
    except ValueError:
        out = ()
    if not out or min(out) < 0:
        raise UserError(f"--seeds {text!r}: give training seeds >= 0, comma separated (e.g. --seeds 0,1,2)")
    return out


def run_name(name: str, seed: int) -> str:
    """The run folder of a cell at a training seed: seed 0 keeps the cell's own name (the runs made before
    seeds are reused), seed N > 0 adds "-sN"."""
    return name if seed == 0 else f"{name}-s{seed}"


def seed_table(head: list[str], rows: list[tuple[str, list[str], str]], recs: dict, seed_list, ref: str,
               fmt) -> list[str]:
    """Markdown lines: per row (label, its leading cells, cell name) the FVD of each seed's run (``fmt`` of
    ``recs[run_name(name, seed)]``, "not run" when absent), mean, min..max, sd and the verdict against the
    row labelled ``ref`` ("-" for a row with no finished seed)."""
    scores = {label: [seed_score(s, recs[run_name(name, s)]) for s in seed_list if run_name(name, s) in recs]
              for label, _, name in rows}
    verdict = verdicts(scores, ref)
    cols = head + [f"seed {s}" for s in seed_list] + ["mean", "min..max", "sd", f"vs {ref}"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for label, lead, name in rows:
        fvds = [fmt(recs[run_name(name, s)]) if run_name(name, s) in recs else "not run" for s in seed_list]
        lines.append("| " + " | ".join(lead + fvds + spread_cells(scores[label])
                                       + [verdict[label] if scores[label] else "-"]) + " |")
    return lines
