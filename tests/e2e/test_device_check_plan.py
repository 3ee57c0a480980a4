"""The GPU check's plan without running it: the default steps' time boxes fit 10 device minutes with compile
in its own box, the orchestrator gives every step its whole box, and no default step needs PyAV."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check as dc  # noqa: E402
import devcheck_payload  # noqa: E402


def test_default_plan_fits_ten_minutes_with_compile_in_its_own_box():
    p = dc.plan()
    assert p["steps"] == list(dc.DEFAULT_STEPS) and "run" not in p["steps"]
    assert p["total_s"] == sum(dc.BOXES["full"][s] for s in dc.DEFAULT_STEPS) <= 540 < dc.DEVICE_SECONDS == 600
    assert p["fits"] and p["compile_own_box_s"] == dc.BOXES["full"]["compile"] >= 180


def test_every_step_gets_its_whole_box(tmp_path, monkeypatch):
    """The orchestrator on a (faked) GPU: each step's time box is its BOXES entry, the budget their sum."""
    boxes = {}

    def fake_step(step, args, work, timeout, logs):
        boxes[step] = timeout
        return {"step": step, "status": "ok", "subruns": {}, "seconds": 0.0, "timeout_s": round(timeout)}

    monkeypatch.setattr(dc, "run_step", fake_step)
    rc = dc.main([str(tmp_path / "out"), "--device", "cuda", "--work", str(tmp_path / "work")])
    assert rc in (0, 1)
    assert list(boxes) == list(dc.DEFAULT_STEPS)
    assert all(abs(boxes[s] - dc.BOXES["full"][s]) < 2 for s in boxes), boxes
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["budget_s"] == dc.plan()["total_s"] and s["plan"]["fits"]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == sorted(dc.OUT_FILES)


def test_payload_counts_tree_and_wheels(tmp_path, capsys):
    (tmp_path / "w.whl").write_bytes(b"x" * 2**20)
    base = devcheck_payload.payload(wheels=tmp_path / "none")
    with_whl = devcheck_payload.payload(wheels=tmp_path)
    assert with_whl["total_bytes"] == base["tree_bytes"] + 2**20 and with_whl["wheels"] == {"w.whl": 2**20}
    assert 0 < base["mini_bytes"] < base["tree_bytes"]
    assert devcheck_payload.main(["--wheels", str(tmp_path)]) == 0
    assert devcheck_payload.main(["--wheels", str(tmp_path), "--limit-mib", "1"]) == 1
    assert "OVER" in capsys.readouterr().out
