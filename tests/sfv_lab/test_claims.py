"""The paper's claims in the mini world (sfv_lab.claims) on stored numbers: each claim's verdict by the seed
rule, folders merged, the step ladder, and one-line errors."""
from __future__ import annotations

import json

import pytest

from bench.cli import main
from sfv_lab import claims
from sfv_lab.distill import BASE


def rec(fvd, half=2.0):
    return {"fvd": fvd, "fvd_interval": [fvd - half, fvd + half]}


def write(folder, cells, seed_list=(0, 1, 2)):
    folder.mkdir(parents=True, exist_ok=True)
    runs = {}
    for cell, fvds in cells.items():
        for s, f in zip(seed_list, fvds):
            runs[cell if s == 0 else f"{cell}-s{s}"] = rec(f)
    (folder / "ablations.json").write_text(json.dumps({"seeds": list(seed_list), "cells": runs}))
    return folder


def verdicts(text):
    return {ln.split(" | ")[0][2:]: ln.rsplit(" | ", 1)[1].rstrip(" |") for ln in text.splitlines()
            if ln.startswith("| ") and not ln.startswith("| claim")}


def test_each_claim_gets_the_seed_rules_verdict_from_several_folders(tmp_path, capsys):
    write(tmp_path / "rows", {"row-sfv": [20, 25, 22], "row-ufogen": [70, 72, 69], "row-ladd": [24, 21, 30]})
    write(tmp_path / "abl", {BASE: [30, 31, 29], "heads-spatial": [45, 50, 47], "heads-temporal": [25, 26, 24],
                             "lambda-0": [30, 33, 28]})
    assert main(["claims", str(tmp_path / "rows"), str(tmp_path / "abl"), "--write", str(tmp_path / "c.md")]) == 0
    v = verdicts((tmp_path / "c.md").read_text())
    assert v["one step: SF-V beats UFOGen"] == "reproduced"
    assert v["one step: SF-V beats LADD"] == "not separable"
    assert v["heads: spatial + temporal beat spatial only"] == "reproduced"
    assert v["heads: spatial + temporal beat temporal only"] == "not reproduced: the reverse holds"
    assert v["the reconstruction term helps: lambda 0.01 beats lambda 0"] == "not separable"
    assert v["D noise: (-1, -1) beats (-2, -1)"] == "not measured: fewer than 3 seeds (0)"
    out = capsys.readouterr().out
    assert "| 22.33 (20.00..25.00, 3 seeds) | 70.33 (69.00..72.00, 3 seeds) |" in out
    assert "## The one-step rows' runs" in out and "| ufogen:1 seed 2 | - | - | - |  |" in out   # each row run


def test_cells_with_fewer_seeds_are_not_claimed(tmp_path):
    write(tmp_path / "rows", {"row-sfv": [20, 25], "row-ufogen": [70, 72]}, seed_list=(0, 1))
    recs, seed_list = claims.load_cells([tmp_path / "rows"])
    assert seed_list == (0, 1)
    assert "not measured: fewer than 3 seeds (2)" in "\n".join(claims.claim_lines(recs, seed_list))


def test_the_rows_are_placed_on_the_teachers_step_ladder(tmp_path, monkeypatch):
    import bench.results

    write(tmp_path / "rows", {"row-sfv": [20, 25, 22], "row-ufogen": [70, 72, 69], "row-ladd": [5, 6, 7]})
    ladder = [{"spec": f"svd:{n}", "fvd": f} for n, f in ((2, 60.0), (4, 30.0), (6, 21.0), (8, 16.0))]
    monkeypatch.setattr(bench.results, "read_results", lambda out: ladder + [{"spec": "onestep:1", "fvd": 68.0}])
    recs, seed_list = claims.load_cells([tmp_path / "rows"])
    lines = claims.ladder_lines(recs, seed_list, tmp_path)
    assert lines[2] == "| sfv:1 | 22.33 (20.00..25.00) | svd:4 30.00 and svd:6 21.00 | svd:6 |"
    assert lines[3] == "| ladd:1 | 6.00 (5.00..7.00) | better than every svd:N (best: svd:8 16.00) | none |"
    assert lines[4] == "| ufogen:1 | 70.33 (69.00..72.00) | worse than every svd:N (worst: svd:2 60.00) | none |"
    ladder[1]["n_fake"] = 64                                  # scored at another N: not comparable
    with pytest.raises(Exception, match=r"scored differently \(N, detector sha256\)"):
        claims.ladder_lines(recs, seed_list, tmp_path)
    monkeypatch.setattr(bench.results, "read_results", lambda out: [])
    with pytest.raises(Exception, match="holds no svd:N row"):
        claims.ladder_lines(recs, seed_list, tmp_path)


def test_a_run_two_folders_hold_with_other_scores_is_refused(tmp_path):
    write(tmp_path / "a", {"row-sfv": [20, 25, 22]})
    write(tmp_path / "b", {"row-sfv": [20, 26, 22]})
    with pytest.raises(Exception, match="runs another folder also holds, with other scores: row-sfv-s1"):
        claims.load_cells([tmp_path / "a", tmp_path / "b"])
    assert claims.load_cells([tmp_path / "a", tmp_path / "a"])[1] == (0, 1, 2)     # the same records: fine
    data = json.loads((tmp_path / "a" / "ablations.json").read_text())
    data["cells"]["row-sfv"]["seconds"] = 12.0                # the same score, other bookkeeping (onestep): fine
    (tmp_path / "b" / "ablations.json").write_text(json.dumps(data))
    assert claims.load_cells([tmp_path / "a", tmp_path / "b"])[0]["row-sfv"]["fvd"] == 20


def test_a_folder_without_ablations_json_is_one_line(tmp_path, capsys):
    assert main(["claims", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no ablations.json" in err and err.count("\n") == 1


def test_the_rows_curves_are_read_per_seed_and_plotted(tmp_path):
    folder = write(tmp_path / "rows", {"row-sfv": [20, 25, 22]})
    for run, shift in (("row-sfv", 0), ("row-sfv-s2", 5)):
        (folder / "runs" / run / "logs").mkdir(parents=True)
        (folder / "runs" / run / "logs" / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "fvd": 50 - s / 100 + shift, "fvd_lo": 45.0, "fvd_hi": 55.0, "fvd_n": 150}) + "\n"
            for s in (100, 200, 300)) + json.dumps({"step": 300, "g_loss": 1.0}) + "\n")
    curves = claims.row_curves([folder])
    assert sorted(curves) == ["sfv"] and sorted(curves["sfv"]) == [0, 2]
    assert [p["fvd"] for p in curves["sfv"][2]] == [54.0, 53.0, 52.0]
    assert main(["claims", str(folder), "--curves", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
