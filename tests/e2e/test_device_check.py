"""benchmarks/device_check.py: the CPU dry run of the one-shot GPU check (tiny shapes, every step), and
its GPU-only summary paths fed with a latency result relabelled as a full-size H100/H200 run."""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pytest
from helpers import BackgroundJob

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check as dc  # noqa: E402

pytestmark = pytest.mark.slow


JOB = BackgroundJob()
# Time limits belong to the benchmark, not to the suite: on a loaded machine a step may take several times
# its usual time, so every required step's time box is HANG_BOX s (only a hang is cut); compile keeps its
# own short box (6 s x --box-scale 3) to show the timeout path. The budget is the boxes' sum (device_check.main).
# Every step runs, run included (PyAV is installed here); the GPU plan's fit is in the summary it writes.
HANG_BOX, BOX_SCALE = 600, 3
REQUIRED = [s for s in dc.STEPS if s not in dc.OPTIONAL]
BUDGET_S = dc.BOXES["quick"]["compile"] * BOX_SCALE + HANG_BOX * len(REQUIRED)


def start_background() -> None:
    """The CPU dry run, started at collection by conftest (~100 s in one thread, beside the suite)."""
    JOB.start([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "{root}/out", "--device", "cpu",
               "--quick", "--work", "{root}/work", "--box-scale", str(BOX_SCALE), "--hang-box", str(HANG_BOX),
               "--steps", ",".join(dc.STEPS)],
              "sfv-devcheck-")


def stop_background() -> None:
    JOB.stop()


@pytest.fixture(scope="module")
def dry_run():
    start_background()                 # already going when conftest started it
    return {"out": JOB.root / "out", "work": JOB.root / "work", "proc": JOB.wait(BUDGET_S + 120)}


def test_dry_run_files_steps_and_summary_last(dry_run):
    p, out = dry_run["proc"], dry_run["out"]
    assert p.returncode in (0, 1), p.stdout[-3000:] + p.stderr[-3000:]   # 1: a step failed, with its reason
    files = sorted(f.name for f in out.iterdir())
    assert files == sorted(dc.OUT_FILES)                                   # 8 files, the device tool's limit
    assert all(f.is_file() and f.stat().st_size > 0 for f in out.iterdir())
    s = json.loads((out / "summary.json").read_text())
    assert s["schema"] == dc.SCHEMA and set(s["steps"]) == set(dc.STEPS) and s["gpu_measured"] is False
    for name, st in s["steps"].items():
        assert st["status"] in ("ok", "failed", "timeout", "skipped", "partial"), name
        if st["status"] != "ok":
            assert isinstance(st["reason"], str) and st["reason"].strip() and "\n" not in st["reason"], (name, st)
    # the required steps ran on the CPU, each with the whole hang box (no budget arithmetic cut one short);
    # compile's 18 s box is too short: it shows the timeout path (or, on a loaded machine, the worker's
    # start-up left too little of it: partial, its sub-run skipped)
    for name in ("env", "run", "latency", "train"):
        assert s["steps"][name]["status"] == "ok", (name, s["steps"][name])
    assert all(s["steps"][n]["timeout_s"] == HANG_BOX for n in REQUIRED), s["steps"]
    assert s["steps"]["compile"]["status"] in ("timeout", "ok", "partial")
    assert s["steps"]["compile"]["timeout_s"] == 6 * BOX_SCALE and s["budget_s"] == BUDGET_S
    # the plan of the GPU run (default steps, full boxes) fits 10 device minutes, compile in its own box
    plan = s["plan"]
    assert plan["fits"] and plan["total_s"] <= plan["must_fit_s"] == 600 and plan["steps"] == list(dc.DEFAULT_STEPS)
    assert plan["compile_own_box_s"] == dc.BOXES["full"]["compile"]
    assert any(ln.strip().startswith("plan on a GPU:") and ln.rstrip().endswith("(fits)") for ln in
               p.stdout.splitlines())
    assert sum(st["seconds"] for st in s["steps"].values()) <= s["wall_s"] + 1 and s["wall_s"] <= s["budget_s"]
    # the summary is printed last: its header, then only its lines
    lines = p.stdout.rstrip().splitlines()
    head = max(i for i, ln in enumerate(lines) if ln.startswith("== device check summary"))
    assert not any(ln.startswith("[devcheck]") for ln in lines[head:])
    assert [ln.split()[0] for ln in lines[head + 1:head + 1 + len(dc.STEPS)]] == list(dc.STEPS)
    assert lines[-1].startswith("wrote 8 files to")
    assert (out / "summary.md").read_text().startswith("# Device check")

    run = json.loads((out / "run.json").read_text())
    assert run["world"] in ("tiny", "mini") and set(run["subruns"]) >= {"fp32", "fp16"}
    for m in run["subruns"]["fp32"]["methods"]:
        assert m["fvd"] > 0 and m["unet_calls"] >= 1 and m["latency"]["median_s"] > 0
    lat = json.loads((out / "latency-bf16.json").read_text())
    assert lat["schema"] == "sfv-bench-latency/1" and lat["options"]["dtype"] == "bf16"
    assert lat["shape"]["name"] == "tiny"
    assert s["latency"]["bf16"]["vae_decode_ms"] > 0 and s["latency"]["bf16"]["onestep_e2e_ms"] > 0
    train = json.loads((out / "train.json").read_text())
    assert train["subruns"]["r1-exact"]["step_s_median"] > 0 and train["lazy_r1_amortised_s"] > 0
    est = train["subruns"]["memory-estimate"]                              # sfv_train.memory beside the measured
    assert est["peak_bytes_exact"] >= est["peak_bytes_approx"] >= est["peak_bytes_none"] > 0
    assert train["subruns"]["sfv-train-cli"]["exported"] is True            # on .npz clips: no PyAV
    gate = json.loads((out / "gate.json").read_text())
    assert gate["subruns"]["regress-slowed"]["rc"] == 1                    # the slowed UNet is caught
    assert gate["subruns"]["regress-unlike"]["rc"] == 2                    # unlike runs are refused
    assert gate["b1_ratio"]["slowed/base"] > 1.3


def test_gpu_figures_and_summary_lines(dry_run, tmp_path):
    """The CUDA-only paths (peak, floors, targets, fits-80GB) on a relabelled result: no GPU needed."""
    out = dry_run["out"]
    r = json.loads((out / "latency-bf16.json").read_text())
    r["env"]["gpu_name"], r["shape"]["name"] = "NVIDIA H200", "paper"
    r["flops"]["unet_batch1"] = 44.8e12
    (tmp_path / "env.json").write_text(json.dumps({"gpu_name": "NVIDIA H200", "matmul_bf16_tflops": 788.0}))
    args = argparse.Namespace(work=str(tmp_path), device="cuda", quick=False, worker="latency",
                              deadline=time.time() + 60, threads=0)
    f = dc.Worker(args).figures(r)
    t = f["targets"]
    assert f["dense_bf16_peak_tflops"] == 989.4 and 0 < f["fraction_of_peak_b1"]
    assert abs(t["unet_b1_floor_h200_ms"] - 56.7) < 0.1 and abs(t["unet_b1_floor_this_chip_ms"] - 56.9) < 0.1
    assert t["applies"] is True and t["unet_b1_met"] is (r["unet_pass"]["batch1"]["median_ms"] <= 80)
    assert dc.peak_for("NVIDIA H100 80GB HBM3") == 989.4 and dc.peak_for("NVIDIA H100 PCIe") == 756.5
    assert dc.peak_for("NVIDIA H100 NVL") == 835.5 and dc.peak_for("Tesla T4") is None

    recs = {s: json.loads((dry_run["work"] / f"{s}.json").read_text()) for s in dc.STEPS
            if (dry_run["work"] / f"{s}.json").is_file()}
    for s, rec in recs.items():
        rec.setdefault("status", "ok")
    recs["env"]["env"].update(gpu_name="NVIDIA H200", driver="580.159.03", free_bytes=140e9,
                              dense_bf16_peak_tflops=989.4, matmul_bf16_tflops=788.0)
    recs["latency"]["subruns"]["bf16"].update(copy.deepcopy(f))
    recs["train"]["fits_80gb"] = {"exact_r1": False, "what_fits": ["r1-approx"], "rule": "x"}
    args = argparse.Namespace(steps=list(dc.STEPS), device="cuda", quick=False, budget_s=400.0)
    s = dc.build_summary(recs, args, time.time() - 100, dry_run["work"])
    lines = dc.summary_lines(s)
    text = "\n".join(lines)
    assert "NVIDIA H200" in lines[0] and "targets (one H200, bf16)" in text and "fits 80 GB: False" in text
    assert "Commit:" in lines[-1]
    assert dc.summary_md(s, lines).startswith("# Device check")
