"""Tables, plot and previews of a run, all regenerated from ``results.jsonl``.

``table.csv`` / ``table.md`` have the form of the paper's Table 1 (Name, Steps, FVD, Latency)
with the paper's numbers side by side; rows we measured that the paper lacks come last. The FVD
column's header says which world and detector produced it (``FVD (tiny world, toy detector)``),
so a CSV loaded elsewhere keeps that; every FVD carries its 95% interval.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

from sfv_core import paper
from sfv_core.fsutil import atomic_path, atomic_write_text
from sfv_fvd.stats import interval_text

from .results import check_same_table, read_results

NOISY_SPREAD = 2.0      # p90 / p10 of the timing pass above this: the latency is flagged


def _fmt(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}f}"


def fvd_label(records: list[dict]) -> str:
    r = next((x for x in records if x.get("status") == "ok"), records[0])
    det = r.get("detector") or {}
    world = r.get("world", "")
    kind = "toy detector" if det.get("toy") else det.get("name", "detector")
    if r.get("world_label"):
        return f"FVD ({r['world_label']})"
    return f"FVD ({world} world, {kind})" if world not in ("", "ucf101") else f"FVD ({kind})"


def columns(records: list[dict]) -> list[str]:
    return ["Name", "Steps", "Method spec", fvd_label(records), "FVD 95% interval", "Latency (s)", "Measured (s)",
            "Measured p90 (s)", "UNet calls x batch", "N", "FVD (paper)", "Latency (s) (paper, A100)"]


def latency_s(rec) -> float | None:
    """A row's headline latency: its UNet calls x the run's time of that UNet pass (rows making the same
    passes agree; bench.generate), else (no pass recorded) the per-video measurement."""
    lat = rec.get("latency") or {}
    return lat.get("calls_x_pass_s", lat.get("median_s"))


def _measured(rec, fvd_col: str) -> dict:
    empty = {fvd_col: "", "FVD 95% interval": "", "Latency (s)": "", "Measured (s)": "", "Measured p90 (s)": "",
             "UNet calls x batch": "", "N": ""}
    if rec is None:
        return empty
    calls = f"{rec['unet_calls']} x {rec['unet_batch']}" if rec.get("unet_calls") else "none"
    if rec.get("status") != "ok":
        return {**empty, fvd_col: "failed", "UNet calls x batch": calls}
    lat = rec.get("latency") or {}
    noisy = (lat.get("spread") or 0) > NOISY_SPREAD
    return {fvd_col: _fmt(rec["fvd"], 2), "FVD 95% interval": interval_text(rec.get("fvd_interval"), rec.get("n_fake")),
            "Latency (s)": _fmt(latency_s(rec), 4) if lat else "0",
            "Measured (s)": (_fmt(lat.get("median_s"), 4) + (" (noisy)" if noisy else "")) if lat else "",
            "Measured p90 (s)": _fmt(lat.get("p90_s"), 4), "UNet calls x batch": calls, "N": str(rec["n_fake"])}


def table_rows(records: list[dict]) -> list[dict]:
    """One row per paper row (measured values where we have that spec), then our extra rows."""
    fvd_col = fvd_label(records)
    by_spec = {r["spec"]: r for r in records}
    rows, used = [], set()
    for p in paper.table1_rows():
        rec = by_spec.get(p["spec"]) if p["spec"] else None
        if rec is not None:
            used.add(p["spec"])
        rows.append({"Name": p["name"], "Steps": str(p["steps"]), "Method spec": p["spec"] or "",
                     **_measured(rec, fvd_col), "FVD (paper)": _fmt(p["fvd"], 1),
                     "Latency (s) (paper, A100)": _fmt(p["latency_s"], 2)})
    for rec in records:
        if rec["spec"] in used:
            continue
        rows.append({"Name": rec.get("label") or rec["method"], "Steps": str(rec["steps"]),
                     "Method spec": rec["spec"], **_measured(rec, fvd_col), "FVD (paper)": "",
                     "Latency (s) (paper, A100)": ""})
    return rows


def _header_lines(records: list[dict]) -> list[str]:
    r = next((x for x in records if x.get("status") == "ok"), records[0])
    det = r.get("detector", {})
    proto = r.get("protocol", {})
    lat = next((x["latency"] for x in records if x.get("latency")), {})
    procs = r.get("processes") or 1
    gen_where = r.get("device_name", "") + (f" in each of {procs} processes" if procs > 1 else "")
    lat_where = lat.get("device_name", r.get("device_name", "")) + (
        " in the first alone" if (lat.get("processes") or 1) > 1 else "")
    lines = [
        f"Metric: {r.get('metric', '')} (covariance {r.get('covariance', '')}); "
        f"N real = {r.get('n_real', '')}; split {proto.get('split')} fold {proto.get('fold')}; "
        f"{proto.get('num_frames')} frames at {proto.get('fps')} fps, generated at "
        f"{proto.get('gen_width')}x{proto.get('gen_height')}, scored at {proto.get('score_width')}x{proto.get('score_height')}.",
        f"Detector: {det.get('label', det.get('name', ''))} (sha256 {str(det.get('sha256', ''))[:16]}...). "
        f"FVD interval: 95%, grouped jackknife over the generated videos (real statistics fixed).",
        f"Device: generation and FVD on {gen_where}, the timing pass on {lat_where}; dtype {r.get('dtype', '')}; "
        f"latency = UNet calls x the time of that UNet pass (architecture, input shape: median of repeated calls "
        f"after warm-up, timed once per run folder, so rows making the same passes agree); measured = UNet time "
        f"per video at batch 1 in the method's own sampler ({lat.get('clock', '')}, {lat.get('threads', '?')} "
        f"thread(s), load average {lat.get('load_average')}), warm-up excluded. Paper latencies: one A100.",
    ]
    if r.get("world_label"):
        lines.insert(0, f"NOT THE PAPER'S NUMBERS: {r['world_label']}. It shows what the suite measures with "
                        f"models trained here on synthetic data; the paper's columns are beside it for the layout only.")
    elif r.get("toy") or det.get("toy"):
        lines.insert(0, f"NOT THE PAPER'S NUMBERS: the {r.get('world', '')} world (synthetic data, its own small "
                        f"models and detector). It shows what the suite measures; it is not comparable with the "
                        f"paper's FVD or latency.")
    if r.get("world") == "mini" and not any(x["spec"].startswith("animatelcm") for x in records):
        lines.append("AnimateLCM* (the released 25-frame AnimateLCM-SVD-xt): absent in the mini world, which has no "
                     "25-frame model; the AnimateLCM rows (lcm:N) are AnimateLCM's consistency distillation run here "
                     "at 14 frames.")
    for x in records:
        if x.get("status") != "ok":
            lines.append(f"FAILED {x['spec']}: {x.get('error', '')}")
        elif ((x.get("latency") or {}).get("spread") or 0) > NOISY_SPREAD:
            lines.append(f"NOISY latency of {x['spec']}: p90/p10 = {x['latency']['spread']:.1f} over "
                         f"{x['latency']['n']} videos (a busy machine?): rerun with --redo-latency")
    return lines


def render_csv(records: list[dict]) -> str:
    import csv
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns(records), lineterminator="\n")
    w.writeheader()
    for row in table_rows(records):
        w.writerow(row)
    return buf.getvalue()


def render_md(records: list[dict]) -> str:
    from tabulate import tabulate
    cols = columns(records)
    body = tabulate([[row[c] for c in cols] for row in table_rows(records)], headers=cols, tablefmt="github",
                    disable_numparse=True)
    notes = "\n".join(f"> {line}" for line in _header_lines(records))
    return f"# Table 1 (regenerated)\n\n{notes}\n\n{body}\n"


def write_tables(run_dir, records: list[dict] | None = None) -> dict:
    run_dir = Path(run_dir)
    records = records if records is not None else read_results(run_dir)
    out = {"csv": run_dir / "table.csv", "md": run_dir / "table.md"}
    atomic_write_text(out["csv"], render_csv(records))
    atomic_write_text(out["md"], render_md(records))
    return out


def write_plot(run_dir, records: list[dict]) -> Path | None:
    """FVD (with its interval) against UNet latency per method (log latency axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return None
    toy = any(r.get("toy") or (r.get("detector") or {}).get("toy") for r in ok)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    floor = min((latency_s(r) for r in ok if (latency_s(r) or 0) > 0), default=1e-3) / 3
    for r in ok:
        x = latency_s(r) if (latency_s(r) or 0) > 0 else floor
        y = r["fvd"]
        lo, hi = r.get("fvd_interval") or (y, y)
        lo, hi = (max(lo, 0.0), hi) if math.isfinite(lo) and math.isfinite(hi) else (y, y)   # as interval_text
        ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", capsize=3,
                    mfc="white" if not r.get("unet_calls") else None)
        ax.annotate(r["spec"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if not toy:  # the paper's points are only comparable with a real detector
        for p in paper.table1_rows():
            ax.scatter([p["latency_s"]], [p["fvd"]], marker="x", color="grey")
        ax.scatter([], [], marker="x", color="grey", label="paper (A100)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    lat = next((r["latency"] for r in ok if r.get("latency")), {})
    ax.set_xlabel(f"UNet latency per video (s, {lat.get('device_name', '')}, {ok[0].get('dtype')}); "
                  f"rows without a UNet at the left edge", fontsize=8)
    ax.set_ylabel(("FVD" if ok[0].get("world_label") else fvd_label(records)) + ", 95% interval")
    wl = ok[0].get("world_label")
    ax.set_title(f"{ok[0].get('metric', 'FVD')}: FVD vs latency" + (f"\n{wl}" if wl else
                                                                    " [not the paper's numbers]" if toy else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(run_dir) / "fvd_vs_latency.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def write_previews(out: Path, records: list[dict], refs, condition, protocol, title: str) -> None:
    """previews/<spec>.gif and .mp4: per video a labelled row condition | real | generated."""
    from sfv_core.data.ucf101 import load_sample
    from sfv_core.data.videoio import read_video

    from .generate import spec_dirname
    from .previews import write_preview

    reals = {r.sample_id: load_sample(r, protocol).real_clip for r in refs}
    for rec in records:
        if rec.get("status") != "ok" or not rec.get("samples"):
            continue
        sdir = Path(rec["samples"])
        rows = [(r.sample_id, condition(r), reals[r.sample_id], read_video(sdir / f"{r.sample_id}.npz"))
                for r in refs if (sdir / f"{r.sample_id}.npz").is_file()]
        if rows:
            write_preview(out / "previews" / spec_dirname(rec["spec"]), rows, protocol.fps,
                          f"{rec['spec']} - {title}")


def cli_table(args) -> int:
    """`sfv-bench table RUN [RUN ...]`: print (and with --write rewrite) the table of one run, or of several
    runs merged when their protocol, detector and N agree (a later run's record of a spec wins)."""
    from .results import merge

    runs = list(args.run) if isinstance(args.run, (list, tuple)) else [args.run]
    groups = [(str(r), read_results(r)) for r in runs]
    check_same_table(groups)
    records: list = []
    for _, recs in groups:
        records = merge(records, recs)
    text = render_csv(records) if args.format == "csv" else render_md(records)
    if args.write:
        if len(runs) > 1:
            from sfv_core.errors import UserError
            raise UserError("--write rewrites one run's tables; with several runs, redirect the printed table")
        from sfv_core.fsutil import folder_lock

        with folder_lock(runs[0], "sfv-bench table --write", option="run folder"):
            write_tables(runs[0], records)
    sys.stdout.write(text)                       # the command's output (a table), not a log message
    return 0


def render_reference(fmt: str) -> str:
    """The paper's Table 1 alone (committed under results/ as the reference table)."""
    from tabulate import tabulate
    rows = paper.table1_rows()
    headers = ["Name", "Steps", "FVD", "Latency (s)", "Method spec"]
    data = [[r["name"], r["steps"], f"{r['fvd']:.1f}", f"{r['latency_s']:.2f}", r["spec"] or ""] for r in rows]
    if fmt == "csv":
        return ",".join(headers) + "\n" + "".join(",".join(str(c) for c in row) + "\n" for row in data)
    note = ("# SF-V paper, Table 1 (reference)\n\nFVD on UCF-101 (first-frame conditioning, 14 frames at 1024x576, "
            "7 fps, scored at 320x240); latency of the denoising process (UNet only) per video on one NVIDIA A100. "
            "Method spec: the `sfv-bench run --methods` entry that regenerates the row (empty: AnimateLCM retrained on "
            "the paper's internal data, not reproducible).\n\n")
    return note + tabulate(data, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def render_reference_tables23() -> str:
    """The paper's Tables 2 and 3 (committed as results/paper_tables23.md)."""
    from tabulate import tabulate
    t2 = tabulate([[n, f"{f:.1f}"] for n, f in paper.TABLE2], headers=["Discriminator heads", "FVD"],
                  tablefmt="github", disable_numparse=True)
    t3 = tabulate([[f"{a:.1f}", f"{b:.1f}", f"{f:.1f}"] for a, b, f in paper.TABLE3], headers=["P_mean", "P_std", "FVD"],
                  tablefmt="github", disable_numparse=True)
    return ("# SF-V paper, Tables 2 and 3 (reference)\n\nFVD on UCF-101 of SF-V trained with other discriminator "
            "settings (`sfv-train --heads spatial|temporal|both`, `--p-mean/--p-std`).\n\n## Table 2: discriminator "
            "heads\n\n" + t2 + "\n\n## Table 3: FVD vs the sigma' distribution\n\n" + t3 + "\n")


def write_reference(folder="results") -> None:
    """Regenerate the committed reference tables (results/paper_table1.*, results/paper_tables23.md)."""
    folder = Path(folder)
    atomic_write_text(folder / "paper_table1.csv", render_reference("csv"))
    atomic_write_text(folder / "paper_table1.md", render_reference("md"))
    atomic_write_text(folder / "paper_tables23.md", render_reference_tables23())

