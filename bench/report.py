"""Tables, plot and previews of a run, all regenerated from ``results.jsonl``.

``table.csv`` / ``table.md`` have the form of the paper's Table 1 (Name, Steps, FVD, Latency)
with the paper's numbers side by side; rows we measured that the paper lacks come last.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

from sfv_core import paper
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path, atomic_write_bytes, atomic_write_text

COLUMNS = ["Name", "Steps", "Method spec", "FVD", "Latency (s)", "Latency p90 (s)", "UNet calls x batch",
           "N", "FVD (paper)", "Latency (s) (paper, A100)"]


def read_results(run_dir) -> list[dict]:
    path = Path(run_dir) / "results.jsonl"
    if not path.exists():
        raise UserError(f"no results.jsonl in {run_dir} (is it a `sfv-bench run` output folder?)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise UserError(f"{path} is empty")
    return records


def _fmt(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.{digits}f}"


def table_rows(records: list[dict]) -> list[dict]:
    """One row per paper row (measured values where we have that spec), then our extra rows."""
    by_spec = {r["spec"]: r for r in records}
    rows, used = [], set()

    def measured(rec):
        if rec is None:
            return {"FVD": "", "Latency (s)": "", "Latency p90 (s)": "", "UNet calls x batch": "", "N": ""}
        if rec.get("status") != "ok":
            return {"FVD": "failed", "Latency (s)": "", "Latency p90 (s)": "",
                    "UNet calls x batch": f"{rec['unet_calls']} x {rec['unet_batch']}", "N": ""}
        lat = rec.get("latency") or {}
        return {"FVD": _fmt(rec["fvd"], 2), "Latency (s)": _fmt(lat.get("median_s"), 4),
                "Latency p90 (s)": _fmt(lat.get("p90_s"), 4),
                "UNet calls x batch": f"{rec['unet_calls']} x {rec['unet_batch']}", "N": str(rec["n_fake"])}

    for p in paper.table1_rows():
        rec = by_spec.get(p["spec"]) if p["spec"] else None
        if rec is not None:
            used.add(p["spec"])
        rows.append({"Name": p["name"], "Steps": str(p["steps"]), "Method spec": p["spec"] or "",
                     **measured(rec), "FVD (paper)": _fmt(p["fvd"], 1),
                     "Latency (s) (paper, A100)": _fmt(p["latency_s"], 2)})
    for rec in records:
        if rec["spec"] in used:
            continue
        rows.append({"Name": rec.get("label") or rec["method"], "Steps": str(rec["steps"]),
                     "Method spec": rec["spec"], **measured(rec), "FVD (paper)": "",
                     "Latency (s) (paper, A100)": ""})
    return rows


def _header_lines(records: list[dict]) -> list[str]:
    r = next((x for x in records if x.get("status") == "ok"), records[0])
    det = r.get("detector", {})
    proto = r.get("protocol", {})
    lines = [
        f"Metric: {r.get('metric', '')} (covariance {r.get('covariance', '')}); "
        f"N real = {r.get('n_real', '')}; split {proto.get('split')} fold {proto.get('fold')}; "
        f"{proto.get('num_frames')} frames at {proto.get('fps')} fps, generated at "
        f"{proto.get('gen_width')}x{proto.get('gen_height')}, scored at {proto.get('score_width')}x{proto.get('score_height')}.",
        f"Detector: {det.get('label', det.get('name', ''))} (sha256 {str(det.get('sha256', ''))[:16]}...).",
        f"Device: {r.get('device_name', r.get('device', ''))}, dtype {r.get('dtype', '')}; latency = UNet time per "
        f"video ({(r.get('latency') or {}).get('clock', '')}), warm-up excluded. Paper latencies: one A100.",
    ]
    if det.get("toy"):
        lines.insert(0, "TOY NUMBERS: FVD below comes from a random-init toy detector on a synthetic dataset with "
                        "a random-init tiny model stack. It checks the pipeline end to end; it is NOT comparable "
                        "with the paper's FVD.")
    failed = [x for x in records if x.get("status") != "ok"]
    for x in failed:
        lines.append(f"FAILED {x['spec']}: {x.get('error', '')}")
    return lines


def render_csv(records: list[dict]) -> str:
    import csv
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in table_rows(records):
        w.writerow(row)
    return buf.getvalue()


def render_md(records: list[dict]) -> str:
    from tabulate import tabulate
    rows = table_rows(records)
    toy = any((r.get("detector") or {}).get("toy") for r in records)
    headers = [("FVD (toy detector)" if (c == "FVD" and toy) else c) for c in COLUMNS]
    body = tabulate([[row[c] for c in COLUMNS] for row in rows], headers=headers, tablefmt="github",
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
    """FVD against UNet latency per method (log latency axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok" and r.get("latency")]
    if not ok:
        return None
    toy = any((r.get("detector") or {}).get("toy") for r in ok)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for r in ok:
        x, y = r["latency"]["median_s"], r["fvd"]
        ax.scatter([x], [y])
        ax.annotate(r["spec"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if not toy:  # the paper's points are only comparable with a real detector
        for p in paper.table1_rows():
            ax.scatter([p["latency_s"]], [p["fvd"]], marker="x", color="grey")
        ax.scatter([], [], marker="x", color="grey", label="paper (A100)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"UNet latency per video (s, {ok[0].get('device_name', ok[0].get('device'))}, {ok[0].get('dtype')})")
    ax.set_ylabel("FVD (toy detector)" if toy else "FVD")
    ax.set_title(f"{ok[0].get('metric', 'FVD')}: FVD vs latency" + (" [TOY]" if toy else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(run_dir) / "fvd_vs_latency.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def write_preview(path, videos, fps: int = 7) -> None:
    """Animated GIF of up to 4 videos side by side (uint8 (T, H, W, 3) each)."""
    import numpy as np
    from PIL import Image

    videos = [np.asarray(v) for v in videos[:4]]
    t = min(v.shape[0] for v in videos)
    frames = [Image.fromarray(np.concatenate([v[i] for v in videos], axis=1)) for i in range(t)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())


def cli_table(args) -> int:
    records = read_results(args.run)
    text = render_csv(records) if args.format == "csv" else render_md(records)
    if args.write:
        write_tables(args.run, records)
    print(text, end="")
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

