"""The summary of the device check: ``build_summary`` (summary.json from the step records),
``summary_lines`` (the printed summary), ``summary_md`` (summary.md) and ``write_outputs`` (the other
files under OUT: run/train/gate records, the latency results, log.txt)."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from devcheck_util import (FLOOR_NOTE, LOG_LIMIT, OPTIONAL, PEAK_SOURCE, SCHEMA, STEPS, gib, ms, plan, read_json,
                           write_json)
from gpu_latency import TARGET_ONESTEP_E2E_MS, TARGET_UNET_MS  # torch-free

LATENCY_RUNS = ("bf16", "fp16", "bf16-compile", "fp16-compile")
FIGURES = ("status", "reason", "label", "precision_passed", "precision_rel_l2", "unet_b1_ms", "unet_b1_p10_ms",
           "unet_b1_p90_ms", "unet_b2_ms", "eager_b1_ms", "tflops_b1", "tflops_b2", "dense_bf16_peak_tflops",
           "fraction_of_peak_b1", "vae_decode_ms", "peak_mem_bytes", "peak_mem_max_bytes", "onestep_spec",
           "onestep_e2e_ms", "svd_spec", "svd_unet_loop_ms", "targets", "candidates", "shape")


def faster_source(lat: dict, dtype: str) -> str:
    """'compile' when the compiled run of ``dtype`` passed its precision check and beat the eager one, else
    'latency': the step whose result becomes latency-<dtype>.json."""
    comp, eager = lat.get(f"{dtype}-compile") or {}, lat.get(dtype) or {}
    if comp.get("status") == "ok" and comp.get("precision_passed") and eager.get("unet_b1_ms") \
            and comp["unet_b1_ms"] < eager["unet_b1_ms"]:
        return "compile"
    return "latency"


def _clean_log(text: str) -> str:
    """Progress bars rewrite their line with '\\r': keep the last state of each line."""
    return "\n".join(ln.split("\r")[-1] for ln in text.split("\n"))


def build_summary(recs: dict, args, t_start: float, work: Path) -> dict:
    env = (recs.get("env") or {}).get("env") or read_json(work / "env.json") or {}
    steps = {}
    for s in STEPS:
        r = recs.get(s)
        if r is None:
            steps[s] = {"status": "skipped", "reason": "not selected (--steps)" if s not in args.steps
                        else "budget exhausted before this step"}
        else:
            steps[s] = {"status": r.get("status"), "reason": r.get("reason"), "seconds": r.get("seconds"),
                        "timeout_s": r.get("timeout_s")}
            if r.get("status") == "skipped":
                steps[s]["reason"] = r.get("reason")
    lat = {**recs.get("latency", {}).get("subruns", {}), **recs.get("compile", {}).get("subruns", {})}
    run = recs.get("run", {})
    train = recs.get("train", {})
    gate = recs.get("gate", {})
    required_ok = all(steps[s]["status"] == "ok" for s in args.steps if s not in OPTIONAL)
    return {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:], "device": args.device, "mode": "quick (tiny shapes)" if args.quick else "full (paper shapes)",
        "budget_s": args.budget_s, "wall_s": round(time.time() - t_start, 1), "all_ok": required_ok,
        "plan": plan(),
        "gpu_measured": bool(env.get("gpu_name")) and not args.quick,
        "steps": steps,
        "env": {k: env.get(k) for k in ("gpu_name", "driver", "nvidia_smi", "capability", "sms", "total_bytes",
                                        "free_bytes", "torch", "cuda", "cudnn", "dense_bf16_peak_tflops", "peak_source",
                                        "matmul_bf16_tflops", "matmul_n", "cpu", "threads", "versions",
                                        "import_failures", "python")},
        "run": {"world": run.get("world"), "n": run.get("n"), "note": run.get("note"),
                "substituted": run.get("substituted"), "compare": run.get("compare"),
                "rows": {k: [{x: m.get(x) for x in ("spec", "fvd", "fvd_interval", "unet_calls", "unet_batch")}
                             | {"unet_s_per_video": (m.get("latency") or {}).get("median_s"),
                                "clock": (m.get("latency") or {}).get("clock")}
                             for m in v.get("methods", [])]
                         for k, v in run.get("subruns", {}).items() if v.get("methods")}},
        "latency": {k: {x: lat[k].get(x) for x in FIGURES} for k in LATENCY_RUNS if k in lat}
        | {"substituted": recs.get("latency", {}).get("substituted"),
           "latency_bf16_json_from": faster_source(lat, "bf16"), "latency_fp16_json_from": faster_source(lat, "fp16")},
        "train": {k: train.get(k) for k in ("size", "shape", "tried", "fits_80gb", "lazy_r1_amortised_s", "r1_every")}
        | {"variants": {k: {x: v.get(x) for x in ("status", "reason", "step_s_median", "peak_allocated_bytes",
                                                   "peak_reserved_bytes", "peak_rss_bytes", "fits_80gb", "bf16")}
                        for k, v in train.get("subruns", {}).items()}},
        "gate": {k: {x: v.get(x) for x in ("status", "reason", "rc", "expected_rc", "what")}
                 for k, v in gate.get("subruns", {}).items()}
        | {"tolerance_pct": gate.get("tolerance_pct"), "how_slowed": gate.get("how_slowed"),
           "b1_ratio": gate.get("b1_ratio")},
    }


def summary_lines(s: dict) -> list[str]:
    env, steps = s["env"], s["steps"]
    dev = env.get("gpu_name") or (f"CPU {env.get('cpu')} ({env.get('threads')} thread(s))" if env.get("cpu") else
                                  f"{s['device']}: no device seen (env step {steps['env']['status']})")
    lines = [f"== device check summary: {dev}, {s['mode']}, {s['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget; "
             f"{'all steps ok' if s['all_ok'] else 'NOT all ok'}"]
    pl = s["plan"]

    def row(step, text):
        st = steps[step]
        why = "" if st["status"] == "ok" else f"  [{st['reason']}]"
        lines.append(f"{step:8s} {st['status']:8s} {text}{why}")

    peak = env.get("dense_bf16_peak_tflops")
    row("env", f"{dev}; driver {env.get('driver') or '—'}; torch {env.get('torch')}, CUDA {env.get('cuda') or '—'}; "
               f"free {gib(env.get('free_bytes'))}; dense bf16 peak {peak or '—'} TFLOP/s (datasheet); matmul "
               f"{(env.get('matmul_bf16_tflops') or 0):.3g} TFLOP/s measured ({env.get('matmul_n')}^3 bf16)")
    r = s["run"]
    parts = []
    for label, rows in r.get("rows", {}).items():
        one = next((m for m in rows if m["unet_calls"] == 1), rows[-1] if rows else None)
        if label == "fp16" and r.get("substituted"):
            label = "fp16(->bf16 on CPU)"
        if one:
            iv = one.get("fvd_interval") or [float("nan")] * 2
            parts.append(f"{label} {one['spec']} FVD {one['fvd']:.1f} [{iv[0]:.1f}, {iv[1]:.1f}], "
                         f"{one['unet_calls']}x b{one['unet_batch']}, UNet {1e3 * (one['unet_s_per_video'] or 0):.1f} ms/video")
    row("run", f"{r.get('world')} world n={r.get('n')}: " + ("; ".join(parts) or "no rows"))
    lat = s["latency"]
    parts = []
    for k in ("bf16", "fp16"):
        v = lat.get(k)
        if not v or v.get("unet_b1_ms") is None:
            continue
        frac = v.get("fraction_of_peak_b1")
        t = v.get("targets") or {}
        parts.append(f"{k}: {v['label']} UNet b1 {ms(v['unet_b1_ms'])} (eager {ms(v.get('eager_b1_ms'))}), b2 "
                     f"{ms(v['unet_b2_ms'])}, {v['tflops_b1']:.3g} TFLOP/s"
                     + (f" = {100 * frac:.0f}% of peak" if frac else "")
                     + (f", floor H200 {t['unet_b1_floor_h200_ms']:.0f} ms / this chip "
                        f"{ms(t.get('unet_b1_floor_this_chip_ms'))}" if t else "")
                     + f", VAE decode {ms(v.get('vae_decode_ms'))}, one-step e2e {ms(v.get('onestep_e2e_ms'))}, "
                       f"peak {gib(v.get('peak_mem_max_bytes'))}"
                     + (f", precision {'pass' if v.get('precision_passed') else 'FAIL'}"))
    row("latency", " | ".join(parts) or "no result")
    if any((lat.get(k) or {}).get("targets") for k in ("bf16", "bf16-compile")):
        best = lat.get("bf16-compile") if lat.get("latency_bf16_json_from") == "compile" else lat.get("bf16")
        t = best["targets"]
        verdict = ("met" if t["unet_b1_met"] and t["onestep_e2e_met"] else "NOT met") if t["applies"] else \
            "not judged (stated for one H200)"
        lines.append(f"{'':17s} targets (one H200, bf16): UNet b1 <= {TARGET_UNET_MS:.0f} ms (floor "
                     f"{t['unet_b1_floor_h200_ms']:.0f} ms), one-step video <= {TARGET_ONESTEP_E2E_MS:.0f} ms: "
                     f"{verdict}; here {ms(best['unet_b1_ms'])} / {ms(best.get('onestep_e2e_ms'))}")
    tr = s["train"]
    parts = []
    for k, v in tr.get("variants", {}).items():
        if v.get("step_s_median") is not None:
            mem = v.get("peak_reserved_bytes") or v.get("peak_rss_bytes")
            parts.append(f"{k} {v['step_s_median']:.2f} s/step, peak {gib(mem)}")
        elif k.startswith("r1"):
            parts.append(f"{k} {v.get('status')}")
    if tr.get("lazy_r1_amortised_s"):
        parts.append(f"lazy R1 (1/{tr['r1_every']}) {tr['lazy_r1_amortised_s']:.2f} s/step")
    fits = tr.get("fits_80gb")
    if fits:
        parts.append(f"exact R1 fits 80 GB: {fits.get('exact_r1')}; fits: {', '.join(fits['what_fits']) or 'none tried'}")
    row("train", f"{tr.get('size')}: " + "; ".join(parts))
    g = s["gate"]
    parts = [f"{k} rc {v.get('rc')} (want {v.get('expected_rc')})" for k, v in g.items()
             if isinstance(v, dict) and k.startswith("regress") and v.get("rc") is not None]
    if g.get("b1_ratio"):
        parts.append("UNet b1 again/base {:.2f}, slowed/base {:.2f}".format(*g["b1_ratio"].values()))
    row("gate", f"tolerance {g.get('tolerance_pct')}%: " + ("; ".join(parts) or "no comparison"))
    parts = [f"{k}: {c['label']} UNet b1 {ms(c['unet_b1_ms'])}, b2 {ms(c.get('unet_b2_ms'))}, one-step e2e "
             f"{ms(c.get('onestep_e2e_ms'))}" for k, c in ((k, lat.get(k) or {}) for k in ("bf16-compile", "fp16-compile"))
             if c.get("unet_b1_ms")]
    row("compile", " | ".join(parts) or "no result")
    lines.append(f"{'':17s} plan on a GPU: " + " + ".join(f"{k} {v} s" for k, v in pl["boxes_s"].items())
                 + f" = {pl['total_s']} s of {pl['must_fit_s']} s ({'fits' if pl['fits'] else 'DOES NOT FIT'})")
    lines.append("No GPU figure in this summary: it ran on a CPU." if not env.get("gpu_name") else
                 ("Tiny shapes (--quick): a smoke run, not the paper's figures." if "quick" in s["mode"] else
                  "Commit: summary to results/gpu/, latency-<dtype>.json to results/latency/<gpu>-<dtype>/latency.json."))
    return lines


def summary_md(s: dict, lines: list[str]) -> str:
    md = ["# Device check", "", f"- Created {s['created']}, mode {s['mode']}, device {s['device']}, "
          f"{s['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget", "",
          "| Step | Status | Seconds | Reason |", "|---|---|---:|---|"]
    for k, v in s["steps"].items():
        md.append(f"| {k} | {v['status']} | {v.get('seconds') or '—'} | {v.get('reason') or ''} |")
    md += ["", "```", *lines, "```", ""]
    lat = s["latency"]
    md += ["| Latency run | Options | UNet b1 | eager b1 | b2 | TFLOP/s b1 | % dense peak | VAE decode | one-step e2e |"
           " peak mem | precision |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k in LATENCY_RUNS:
        v = lat.get(k)
        if v and v.get("unet_b1_ms") is not None:
            frac = v.get("fraction_of_peak_b1")
            md.append(f"| {k} | {v['label']} | {ms(v['unet_b1_ms'])} | {ms(v.get('eager_b1_ms'))} | "
                      f"{ms(v['unet_b2_ms'])} | {v['tflops_b1']:.3g} | {f'{100 * frac:.0f}%' if frac else '—'} | "
                      f"{ms(v.get('vae_decode_ms'))} | {ms(v.get('onestep_e2e_ms'))} | {gib(v.get('peak_mem_max_bytes'))} | "
                      f"{'pass' if v.get('precision_passed') else 'FAIL'} |")
    md += ["", f"Peak: {PEAK_SOURCE}. {FLOOR_NOTE}.", ""]
    return "\n".join(md)


def write_outputs(out: Path, recs: dict, summary: dict, work: Path, logs: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def placeholder(step):
        st = summary["steps"].get(step, {})
        return {"missing": True, "status": st.get("status"), "reason": st.get("reason")}

    write_json(out / "run.json", recs.get("run") or placeholder("run"))
    write_json(out / "train.json", recs.get("train") or placeholder("train"))
    write_json(out / "gate.json", recs.get("gate") or placeholder("gate"))
    for label in ("bf16", "fp16"):
        src = work / (f"latency-{label}-compile.json" if summary["latency"][f"latency_{label}_json_from"] == "compile"
                      else f"latency-{label}.json")
        if src.is_file():
            shutil.copyfile(src, out / f"latency-{label}.json")
        else:
            sub = (recs.get("latency") or {}).get("subruns", {}).get(label)
            write_json(out / f"latency-{label}.json", {"missing": True, "reason": (sub or {}).get("reason")
                                                       or summary["steps"]["latency"].get("reason")})
    chunks = []
    for s in STEPS:
        p = logs / f"{s}.log"
        if p.is_file():
            text = _clean_log(p.read_text(errors="replace"))
            if len(text) > LOG_LIMIT // len(STEPS):
                text = "[... cut ...]\n" + text[-(LOG_LIMIT // len(STEPS)):]
            chunks.append(f"######## {s}\n{text}\n")
    (out / "log.txt").write_text("".join(chunks))
