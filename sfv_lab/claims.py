"""`sfv-bench claims DIR...`: the paper's claims, point by point, in the mini world.

Each claim is "cell X beats cell Y" over the cells ``sfv-bench ablations`` trained (their ``ablations.json``;
several folders may be given, e.g. the Tables 2 / 3 / lambda sweep and the shipped rows' sweep), judged by
the seed rule of ``sfv_lab.seeds``: reproduced (X beats Y), not reproduced (Y beats X), not separable, or not
measured yet (fewer than 3 seeds). With ``--ladder RUN`` (an ``sfv-bench run`` folder holding svd:N rows
scored alike), each one-step row is also placed on the teacher's step ladder.
"""
from __future__ import annotations

import logging
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path, atomic_write_text
from sfv_core.paper import TABLE1, TABLE2, TABLE3

from . import seeds
from .distill import BASE, read_sweep, row_cells, run_lines

log = logging.getLogger(__name__)

_T1 = {spec: fvd for _, _, fvd, _, spec in TABLE1}
_T2 = dict(TABLE2)
_T3 = {(m, s): f for m, s, f in TABLE3}


def _p(mean: float, std: float) -> str:
    return f"heads-both_p{mean:g}{std:+g}"


# claim, the paper's evidence, X, Y (X is the paper's winner)
CLAIMS = [
    ("one step: SF-V beats UFOGen", f"Table 1: {_T1['sfv:1']} vs {_T1['ufogen:1']}", "row-sfv", "row-ufogen"),
    ("one step: SF-V beats LADD", f"Table 1: {_T1['sfv:1']} vs {_T1['ladd:1']}", "row-sfv", "row-ladd"),
    ("heads: spatial + temporal beat spatial only", f"Table 2: {_T2['SP+TE']} vs {_T2['SP']}", BASE, "heads-spatial"),
    ("heads: spatial + temporal beat temporal only", f"Table 2: {_T2['SP+TE']} vs {_T2['TE']}", BASE,
     "heads-temporal"),
    *[(f"D noise: (-1, -1) beats ({m:g}, {s:g})", f"Table 3: {_T3[-1.0, -1.0]} vs {_T3[m, s]}", BASE, _p(m, s))
      for m, s, _ in TABLE3 if (m, s) != (-1.0, -1.0)],
    ("the reconstruction term helps: lambda 0.01 beats lambda 0", "Sec. 3: the objective keeps it (no table)",
     BASE, "lambda-0"),
]
OUTCOME = {"x": "reproduced", "y": "not reproduced: the reverse holds", "none": "not separable"}


def _score(rec: dict) -> tuple:
    return rec.get("fvd"), tuple(rec.get("fvd_interval") or ())


def load_cells(folders: list[Path]) -> tuple[dict, tuple[int, ...]]:
    """The runs' records of every folder's ablations.json (by run name) and the union of their seeds."""
    recs, seed_list = {}, set()
    for folder in folders:
        data = read_sweep(folder)
        twice = [k for k, v in data["cells"].items() if k in recs and _score(recs[k]) != _score(v)]
        if twice:
            raise UserError(f"{folder} holds runs another folder also holds, with other scores: {', '.join(twice)}")
        recs.update(data["cells"])
        seed_list.update(data.get("seeds", [0]))
    return recs, tuple(sorted(seed_list))


def scores(recs: dict, cell: str, seed_list) -> list[seeds.SeedScore]:
    return [seeds.seed_score(s, recs[seeds.run_name(cell, s)]) for s in seed_list if seeds.run_name(cell, s) in recs]


def outcome(x: list, y: list) -> str:
    verdict = seeds.compare(x, y, "X", "Y")
    if verdict.startswith("X beats Y"):
        key = "x"
    elif verdict.startswith("Y beats X"):
        key = "y"
    elif verdict.startswith(seeds.NOT_SEPARABLE):
        key = "none"
    else:
        return f"not measured: {verdict}"
    return OUTCOME[key] + verdict[len(verdict.split(" (")[0]):]        # keeps "(on seeds ...)"


def _cell_text(cell_scores: list) -> str:
    s = seeds.summary(cell_scores)
    if s is None:
        return "not run"
    return f"{s.mean:.2f} ({s.lo:.2f}..{s.hi:.2f}, {s.n} seed{'s' if s.n > 1 else ''})"


def claim_lines(recs: dict, seed_list) -> list[str]:
    lines = ["| claim | paper (FVD, UCF-101) | mini: X mean (min..max) | mini: Y mean (min..max) | verdict |",
             "|---|---|---|---|---|"]
    for claim, paper, x, y in CLAIMS:
        sx, sy = scores(recs, x, seed_list), scores(recs, y, seed_list)
        lines.append(f"| {claim} | {paper} | {_cell_text(sx)} | {_cell_text(sy)} | {outcome(sx, sy)} |")
    return lines


def _scoring(rec: dict) -> tuple:
    """What makes two FVDs comparable: the number of videos and the detector."""
    return rec.get("n_fake"), (rec.get("detector") or {}).get("sha256")


def ladder_lines(recs: dict, seed_list, ladder: Path) -> list[str]:
    """Each shipped one-step row's seeds placed among the svd:N rows of ``ladder`` (scored alike): the svd:N
    whose FVD lies on either side of the seed mean, and those inside the seeds' min..max."""
    from bench.results import read_results

    steps = sorted(((int(r["spec"].split(":")[1]), r) for r in read_results(ladder)
                    if r.get("spec", "").startswith("svd:") and r.get("fvd") is not None), key=lambda t: t[0])
    if not steps:
        raise UserError(f"{ladder} holds no svd:N row: run sfv-bench run --methods svd:2,svd:4,... there first")
    scored = {_scoring(r) for r in recs.values()} | {_scoring(r) for _, r in steps}
    if len(scored) > 1:
        raise UserError(f"{ladder}'s svd:N rows and the cells were scored differently (N, detector sha256): "
                        f"{sorted(scored, key=str)}; score the ladder as the cells were (-n, --fvd-detector)")
    lines = ["| row | seed mean (min..max) | between | svd:N inside the seeds' min..max |", "|---|---|---|---|"]
    for cell, method in row_cells().items():
        s = seeds.summary(scores(recs, cell, seed_list))
        if s is None:
            continue
        worse = [f"svd:{n} {r['fvd']:.2f}" for n, r in steps if r["fvd"] >= s.mean]
        better = [f"svd:{n} {r['fvd']:.2f}" for n, r in steps if r["fvd"] < s.mean]
        inside = [f"svd:{n}" for n, r in steps if s.lo <= r["fvd"] <= s.hi]
        between = (f"{worse[-1]} and {better[0]}" if worse and better else
                   f"worse than every svd:N (worst: {better[0]})" if better else
                   f"better than every svd:N (best: {worse[-1]})")
        lines.append(f"| {method}:1 | {s.mean:.2f} ({s.lo:.2f}..{s.hi:.2f}) | {between} | "
                     f"{', '.join(inside) or 'none'} |")
    return lines


def row_curves(folders: list[Path]) -> dict[str, dict[int, list[dict]]]:
    """Method -> seed -> the FVD-while-training points of that row's run (validation clips), for every
    shipped-row run the folders hold (finished or not)."""
    from sfv_train.evaluation import read_points

    out: dict[str, dict[int, list[dict]]] = {}
    for folder in folders:
        seed_list = read_sweep(folder).get("seeds", [0])
        for cell, method in row_cells().items():
            for s in seed_list:
                points = read_points(Path(folder) / "runs" / seeds.run_name(cell, s) / "logs" / "metrics.jsonl")
                if points:
                    out.setdefault(method, {})[s] = points
    return out


def plot_curves(curves: dict[str, dict[int, list[dict]]], path: Path) -> None:
    """One panel per row: each seed's FVD while training with its 95% interval as a band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(1, len(curves)), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (method, by_seed) in enumerate(sorted(curves.items())):
        ax = fig.add_subplot(1, max(1, len(curves)), i + 1)
        for s, pts in sorted(by_seed.items()):
            pts = [p for p in pts if isinstance(p.get("fvd"), (int, float))]
            x = [p["step"] for p in pts]
            ax.plot(x, [p["fvd"] for p in pts], "o-", ms=2, lw=1, label=f"seed {s}")
            ax.fill_between(x, [p.get("fvd_lo") or p["fvd"] for p in pts], [p.get("fvd_hi") or p["fvd"] for p in pts],
                            alpha=0.2)
        ax.set_title(f"{method}:1, FVD while training (validation, N = {pts[0].get('fvd_n', '?') if pts else '?'})",
                     fontsize=8)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def _scored_on(recs: dict) -> str:
    """World, N, detector, device, dtype and threads of the scores (from one record)."""
    r = next((v for k, v in recs.items() if k != "onestep"), None) or next(iter(recs.values()), {})
    return (f"World: mini (trained on synthetic data). FVD of N = {r.get('n_fake', '?')} videos, "
            f"{(r.get('detector') or {}).get('label', '?')}; generated on {r.get('device_name', '?')}, "
            f"{r.get('dtype', '?')}, {(r.get('latency') or {}).get('threads', '?')} thread(s).")


def cli_claims(args) -> int:
    recs, seed_list = load_cells([Path(f) for f in args.folders])
    lines = ["# The paper's claims in the mini world (NOT the paper's numbers)", "",
             f"Cells from {', '.join(args.folders)} (`sfv-bench ablations`), seeds {', '.join(map(str, seed_list))}; "
             "each seed's FVD on the test split with the mini detector. Verdicts by the seed rule "
             "(sfv_lab/seeds.py): X beats Y only when it holds at every seed (X's interval below Y's) or the "
             "seed means differ by more than the larger min..max; under 3 seeds nothing is claimed.",
             "", _scored_on(recs), "",
             *claim_lines(recs, seed_list)]
    if args.ladder:
        lines += ["", f"## The one-step rows on the teacher's step ladder ({args.ladder})", "",
                  *ladder_lines(recs, seed_list, Path(args.ladder))]
    if any(k.startswith("row-") for k in recs):
        lines += ["", "## The one-step rows' runs", *run_lines(recs, seed_list)]
    if getattr(args, "curves", None):
        plot_curves(row_curves([Path(f) for f in args.folders]), Path(args.curves))
        log.info(f"wrote {args.curves}")
    text = "\n".join(lines) + "\n"
    if args.write:
        atomic_write_text(Path(args.write), text)
        log.info(f"wrote {args.write}")
    print(text, end="")
    return 0
