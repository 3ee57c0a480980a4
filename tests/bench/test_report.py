"""Reference tables and the Table 1 rendering from results records."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from bench import report
from sfv_core import paper

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_tables_match_the_paper_numbers():
    assert (ROOT / "results/paper_table1.csv").read_text() == report.render_reference("csv")
    assert (ROOT / "results/paper_table1.md").read_text() == report.render_reference("md")
    assert (ROOT / "results/paper_tables23.md").read_text() == report.render_reference_tables23()
    rows = list(csv.DictReader(io.StringIO(report.render_reference("csv"))))
    assert len(rows) == 13
    assert (rows[0]["Name"], rows[0]["FVD"], rows[0]["Latency (s)"]) == ("SVD", "153.4", "10.79")
    assert (rows[-1]["Method spec"], rows[-1]["FVD"]) == ("sfv:1", "180.9")


def test_paper_latency_consistency():
    # docs/reference.md#latency-column: 10.79 s / 25 = 0.43 s per batch-2 pass; one-step rows = one batch-1 pass (0.30 s)
    lat = {r["spec"]: r["latency_s"] for r in paper.table1_rows() if r["spec"]}
    assert abs(lat["svd:25"] / 25 - 0.4316) < 1e-3
    assert lat["sfv:1"] == lat["ufogen:1"] == lat["ladd:1"] == 0.30


def _rec(spec, fvd, status="ok", toy=True):
    name, steps = spec.split(":")
    return {"spec": spec, "method": name, "label": name, "steps": int(steps), "unet_calls": int(steps),
            "unet_batch": 2 if name == "svd" else 1, "status": status, "fvd": fvd, "n_fake": 16, "n_real": 16,
            "error": "NonFiniteOutput: NaN" if status != "ok" else None,
            "latency": {"median_s": 0.5, "p90_s": 0.7, "p10_s": 0.45, "spread": 1.6, "n": 3, "threads": 1,
                        "clock": "time.perf_counter"} if status == "ok" else None,
            "fvd_interval": [fvd - 1, fvd + 1] if fvd else None, "world": "tiny" if toy else "ucf101", "toy": toy,
            "detector": {"toy": toy, "label": "toy detector", "sha256": "0" * 64}, "metric": "fvd16_14f_7fps_320x240",
            "covariance": "biased", "protocol": {"split": "test", "fold": 1}, "device": "cpu", "dtype": "float32"}


def test_table_rows_put_measured_values_beside_the_paper():
    records = [_rec("svd:25", 1234.5678), _rec("onestep:1", 99.0), _rec("sfv:1", None, status="failed")]
    rows = {r["Method spec"] or r["Name"] + r["Steps"]: r for r in report.table_rows(records)}
    fvd = "FVD (tiny world, toy detector)"
    assert report.fvd_label(records) == fvd
    assert rows["svd:25"][fvd] == "1234.57" and rows["svd:25"]["FVD (paper)"] == "153.4"
    assert rows["svd:25"]["FVD 95% interval"] == "[1233.57, 1235.57]"
    assert rows["svd:25"]["UNet calls x batch"] == "25 x 2"
    assert rows["svd:16"][fvd] == ""                       # paper row we did not run
    assert rows["sfv:1"][fvd] == "failed"
    assert rows["onestep:1"]["FVD (paper)"] == ""          # our extra row comes last
    assert list(rows)[-1] == "onestep:1"
    md = report.render_md(records)
    assert "NOT THE PAPER'S NUMBERS" in md and "FAILED sfv:1: NonFiniteOutput: NaN" in md
    assert "NOT THE PAPER" not in report.render_md([_rec("svd:25", 150.0, toy=False)])
    noisy = _rec("svd:4", 10.0)
    noisy["latency"]["spread"] = 3.0
    assert "0.5000 (noisy)" in report.render_csv([noisy]) and "NOISY latency of svd:4" in report.render_md([noisy])
