"""`sfv-bench build-mini OUT --ship-rows DIR`: the one-step rows a seed sweep trained, shipped by their
validation FVD (sfv_lab.ship). Training, the UNet copy and the shipped world are fakes."""
from __future__ import annotations

import json

import pytest

import methods.models.mini
import sfv_lab.ship as ship
from bench.cli import main


def sweep(folder, row, val, finished=(0, 1, 2)):
    """An ablations.json of `row` at seeds 0..2 with these validation FVDs (only `finished` seeds done)."""
    cells = {}
    for s in finished:
        name = row if s == 0 else f"{row}-s{s}"
        run = folder / "runs" / name
        (run / "export" / "unet").mkdir(parents=True)
        (run / "fvd_best.json").write_text(json.dumps({"fvd": val[s] + 1, "step": 1600}))
        (run / "fvd_vs_step.png").write_bytes(b"png " + name.encode())
        cells[name] = {"fvd": 40.0 + s, "fvd_interval": [35.0, 45.0], "train_steps": 1600,
                       "convergence": {"text": "flat: ..."}, "validation": {"fvd": val[s]}}
    (folder / "ablations.json").write_text(json.dumps({"seeds": [0, 1, 2], "cells": cells}))
    return folder


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    world = tmp_path / "shipped"
    for rel, text in {"stack/unet/w.bin": "teacher", "unets/sfv/w.bin": "old sfv", "manifest.json": "{}"}.items():
        (world / rel).parent.mkdir(parents=True, exist_ok=True)
        (world / rel).write_text(text)
    (world / "build.json").write_text(json.dumps({"stages": {"distill-sfv": {"fvd": 99.0}, "teacher": {}}}))
    monkeypatch.setattr(ship, "SHIPPED", world)
    monkeypatch.setattr(methods.models.mini, "verified", lambda part, world=None: None)

    def ship_unet(export, world, name):
        (world / "unets" / name).mkdir(parents=True, exist_ok=True)
        (world / "unets" / name / "w.bin").write_text(f"from {export.parent.parent.name}")

    monkeypatch.setattr(ship, "ship_unet", ship_unet)
    return world


def test_the_seed_with_the_lowest_validation_fvd_is_shipped_and_recorded(tmp_path, shipped):
    rows = sweep(tmp_path / "rows", "row-sfv", {0: 30.0, 1: 22.0, 2: 25.0})
    out = tmp_path / "out"
    assert main(["build-mini", str(out), "--ship-rows", str(rows)]) == 0
    assert (out / "world" / "unets" / "sfv" / "w.bin").read_text() == "from row-sfv-s1"
    rec = json.loads((out / "build.json").read_text())["stages"]["distill-sfv"]
    assert rec["fvd"] == 23.0 and rec["shipped_from"]["seed"] == 1 and rec["shipped_from"]["test_fvd"] == 41.0
    assert rec["shipped_from"]["validation_fvd"] == 22.0 and rec["shipped_from"]["train_steps"] == 1600
    assert json.loads((out / "quality.json").read_text())["distilled"]["sfv"]["fvd"] == 23.0
    assert (out / "fvd_vs_step_sfv.png").read_bytes() == b"png row-sfv-s1"
    assert "unets/sfv/w.bin" in json.loads((out / "world" / "manifest.json").read_text())["files"]
    assert (shipped / "unets" / "sfv" / "w.bin").read_text() == "old sfv"          # no --install: untouched


def test_a_row_with_an_unfinished_seed_is_not_shipped(tmp_path, shipped, capsys):
    rows = sweep(tmp_path / "rows", "row-ladd", {0: 30.0, 1: 22.0}, finished=(0, 1))
    assert main(["build-mini", str(tmp_path / "out"), "--ship-rows", str(rows)]) == 2
    err = capsys.readouterr().err
    assert "ladd: not every seed of [0, 1, 2]" in err and "nothing to ship" in err


def test_rows_shipped_by_an_earlier_call_into_the_same_folder_keep_their_records(tmp_path, shipped):
    out = tmp_path / "out"
    assert main(["build-mini", str(out), "--ship-rows", str(sweep(tmp_path / "a", "row-sfv", {0: 30.0, 1: 22.0,
                                                                                            2: 25.0}))]) == 0
    assert main(["build-mini", str(out), "--ship-rows", str(sweep(tmp_path / "b", "row-ladd", {0: 20.0, 1: 28.0,
                                                                                             2: 25.0}))]) == 0
    rec = json.loads((out / "build.json").read_text())
    assert rec["shipped_rows"]["methods"] == ["ladd", "sfv"]
    assert rec["stages"]["distill-sfv"]["shipped_from"]["seed"] == 1
    assert rec["stages"]["distill-ladd"]["shipped_from"]["seed"] == 0
    q = json.loads((out / "quality.json").read_text())["distilled"]
    assert (q["sfv"]["fvd"], q["ladd"]["fvd"]) == (23.0, 21.0)
