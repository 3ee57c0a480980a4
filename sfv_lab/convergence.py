"""When a distillation has stopped improving: the rule on its FVD-while-training curve.

A run's curve is the points its FVD monitor wrote to ``logs/metrics.jsonl`` (validation clips, each point with
its 95% interval). The run counts as converged at step S when its FVD has stopped falling over the last third
of the run: the points with step > 2/3 S (at least ``MIN_POINTS``) are fitted by least squares, and the fall
the fitted line makes across them is no larger than the median half-width of their intervals ("flat within
its interval"). A rising line is flat by this rule: it has stopped falling.

Plain functions over stored points (no training).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

MIN_POINTS = 3


@dataclass(frozen=True)
class Verdict:
    flat: bool
    upto: int              # the run length judged
    points: int            # points in the last third
    fall: float | None     # FVD fall of the fitted line across the last third (> 0: falling)
    half_width: float | None

    def text(self) -> str:
        if self.fall is None:
            return f"too few points in the last third ({self.points} < {MIN_POINTS})"
        state = "flat" if self.flat else "still falling"
        return f"{state}: fall {self.fall:.2f} over steps > {2 * self.upto // 3}, half-width {self.half_width:.2f}"

    def to_dict(self) -> dict:
        return {**asdict(self), "text": self.text()}


def _scored(point: dict) -> bool:
    return all(isinstance(point.get(k), (int, float)) for k in ("fvd", "fvd_lo", "fvd_hi"))


def judge(points: list[dict], upto: int) -> Verdict:
    """The verdict on a run of ``upto`` steps from its FVD points (``step``, ``fvd``, ``fvd_lo``, ``fvd_hi``);
    points after ``upto``, and those of a failed evaluation (no numbers), are ignored, so a rerun judges the
    same length the same way."""
    tail = [p for p in points if 2 * upto / 3 < p["step"] <= upto and _scored(p)]    # a failed evaluation: no point
    xs, ys = [float(p["step"]) for p in tail], [float(p["fvd"]) for p in tail]
    if len(set(xs)) < MIN_POINTS:
        return Verdict(False, upto, len(set(xs)), None, None)
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    fall = -slope * (max(xs) - min(xs))
    half = statistics.median((p["fvd_hi"] - p["fvd_lo"]) / 2 for p in tail)
    return Verdict(fall <= half, upto, len(tail), fall, half)
