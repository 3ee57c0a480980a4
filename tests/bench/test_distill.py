"""The mini world's distillation driver (bench.distill): the sfv-train command lines, the ablation cells of
Tables 2 and 3, and the tables written beside the paper's numbers."""
from __future__ import annotations

from pathlib import Path

from bench.distill import BASE, MINI, cells, train_argv, write_tables
from sfv_core.paper import TABLE2, TABLE3


def test_train_argv_is_the_preset_plus_what_the_size_forces(tmp_path):
    argv = train_argv("sfv", tmp_path / "r", 300, heads="spatial", p_mean=0.0)
    flags = dict(zip(argv[::2], argv[1::2]))
    assert flags["--stack"] == "mini" and flags["--method"] == "sfv" and flags["--max-steps"] == "300"
    assert flags["--heads"] == "spatial" and flags["--p-mean"] == "0.0"
    assert {k: flags[f"--{k}"] for k in MINI} == {k: str(v) for k, v in MINI.items()}


def test_cells_cover_tables_2_and_3_once():
    c = cells()
    assert c[BASE] == {} and c["heads-spatial"] == {"heads": "spatial"} and c["heads-temporal"] == {"heads": "temporal"}
    table3 = [v for v in c.values() if "p_mean" in v]
    assert len(c) == 3 + len(TABLE3) - 1 and len(table3) == len(TABLE3) - 1      # (-1, -1) is the base cell


def test_tables_carry_paper_numbers_intervals_and_missing_cells(tmp_path):
    rec = {"fvd": 12.5, "fvd_interval": [10.0, 15.0], "n_fake": 64, "detector": {"label": "mini detector"},
           "device_name": "CPU", "dtype": "float32"}
    p2, p3 = write_tables(Path(tmp_path), {BASE: rec, "onestep": {**rec, "fvd": 18.0}}, 300)
    t2, t3 = p2.read_text(), p3.read_text()
    assert "NOT the paper's numbers" in t2 and "300 sfv-train steps" in t2 and "onestep:1): 18.00" in t2
    assert f"| SP+TE | {TABLE2[0][1]:.1f} | 12.50 [10.00, 15.00] |" in t2 and "| SP | 514.7 | not run |" in t2
    assert "| -1 | -1 | 180.9 | 12.50 [10.00, 15.00] |" in t3 and t3.count("not run") == len(TABLE3) - 1


def test_ablations_command_trains_each_cell_and_scores_at_the_asked_n(tmp_path, monkeypatch, capsys):
    """`sfv-bench ablations OUT --steps S --cells C -n N`: one sfv-train run per cell (resumable folder),
    scored at N in its own folder (another N never lands in the same run folder)."""
    import argparse

    import pytest

    import bench.distill as d
    from sfv_core.errors import UserError

    calls = []
    rec = {"fvd": 12.5, "fvd_interval": [10.0, 15.0], "n_fake": 150, "detector": {"label": "mini detector"}}
    monkeypatch.setattr(d, "distil", lambda m, out, steps, **over: calls.append(("distil", m, out.name, steps, over))
                        or out / "export" / "unet")
    monkeypatch.setattr(d, "score", lambda spec, unet, out, **flags: calls.append(("score", spec, out, flags)) or rec)
    args = argparse.Namespace(out=str(tmp_path), steps=40, cells="heads-spatial", num_videos=150)
    assert d.cli_ablations(args) == 0
    assert calls[0] == ("score", "onestep:1", tmp_path / "score-n150" / "onestep", {"num_videos": 150})
    assert calls[1] == ("distil", "sfv", "heads-spatial", 40, {"heads": "spatial"})
    assert calls[2] == ("score", "sfv:1", tmp_path / "score-n150" / "heads-spatial", {"num_videos": 150})
    assert len(calls) == 3 and (tmp_path / "table2.md").is_file()
    with pytest.raises(UserError, match="-n must be >= 4"):
        d.cli_ablations(argparse.Namespace(out=str(tmp_path), steps=40, cells=None, num_videos=2))
