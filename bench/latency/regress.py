"""`sfv-bench regress BASELINE CURRENT --tolerance P`: compare two `sfv-bench latency` results.

Meant for GPU runners (pytest-benchmark's maintainers call saved-run comparison on shared CPU CI
unreliable; the CPU gate is ``benchmarks/test_gate_benchmark.py``). Rules:

* Only like runs are compared: equal ``env.gpu_name``, ``env.torch``, every inference option
  (dtype, attention, channels_last, compile, cuda_graphs), the shape, the model sizes, the timing
  schema and the VAE decode chunk; for CPU runs (no GPU name) also ``env.cpu`` and
  ``env.threads``. Otherwise: a UserError naming every differing field (the CLI prints one line
  and exits 2).
* Metrics: medians in milliseconds -- every UNet pass (``unet_pass.<key>``), every component
  (``components.<key>``), and per method spec the UNet loop and the end-to-end total.
* A metric regresses when current > baseline x (1 + P/100). Any regression: exit 1, listing each
  regressed metric with baseline, current and the change in percent. Otherwise exit 0.
"""
from __future__ import annotations

import json
from pathlib import Path

from sfv_core.errors import UserError

from . import SCHEMA
DEFAULT_TOLERANCE_PCT = 10.0


def load_result(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency result {path} does not exist (write one with `sfv-bench latency --out DIR`, "
                        f"then pass DIR/latency.json)")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a JSON file ({e})") from None
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        got = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise UserError(f"{path} is not an `sfv-bench latency` result (schema {got!r}, expected {SCHEMA!r})")
    return result


def _identity(r: dict) -> dict:
    env, models = r.get("env", {}), r.get("models", {})
    ident = {"env.gpu_name": env.get("gpu_name"), "env.torch": env.get("torch")}
    for k, v in sorted(r.get("options", {}).items()):
        ident[f"options.{k}"] = v
    ident["shape"] = r.get("shape")
    for k in ("unet_params", "vae_params", "image_encoder_params"):
        ident[f"models.{k}"] = models.get(k)
    ident["decode_chunk_size"] = r.get("decode_chunk_size")
    if env.get("gpu_name") is None:
        ident["env.cpu"] = env.get("cpu")
        ident["env.threads"] = env.get("threads")
    return ident


def differences(baseline: dict, current: dict) -> list[str]:
    """'field (baseline vs current)' for every identity field that differs."""
    a, b = _identity(baseline), _identity(current)
    out = []
    for key in list(dict.fromkeys([*a, *b])):
        if a.get(key) != b.get(key):
            out.append(f"{key} ({a.get(key)!r} vs {b.get(key)!r})")
    return out


def metrics(r: dict) -> dict[str, float]:
    """Median milliseconds by metric name."""
    out = {}
    for key, v in r.get("unet_pass", {}).items():
        out[f"unet_pass.{key}"] = v["median_ms"]
    for key, v in r.get("components", {}).items():
        out[f"components.{key}"] = v["median_ms"]
    for m in r.get("methods", []):
        out[f"methods.{m['spec']}.unet_loop_ms"] = m["unet_loop_ms"]
        out[f"methods.{m['spec']}.e2e.total_ms"] = m["e2e"]["total_ms"]
    return out


def compare(baseline: dict, current: dict, tolerance_pct: float) -> dict:
    """{'rows': [{metric, baseline_ms, current_ms, change_pct, regressed}], 'only_in_one': [...]}."""
    diff = differences(baseline, current)
    if diff:
        raise UserError("runs are not comparable, they differ in " + "; ".join(diff)
                        + " -- compare runs of the same GPU, torch version, options and shape")
    a, b = metrics(baseline), metrics(current)
    common = [k for k in a if k in b]
    if not common:
        raise UserError("the two runs share no metric (different method specs?)")
    rows = []
    for k in common:
        change = (b[k] - a[k]) / a[k] * 100.0 if a[k] > 0 else float("inf")
        rows.append({"metric": k, "baseline_ms": a[k], "current_ms": b[k], "change_pct": change,
                     "regressed": b[k] > a[k] * (1.0 + tolerance_pct / 100.0)})
    only = sorted(set(a) ^ set(b))
    return {"rows": rows, "only_in_one": only, "tolerance_pct": tolerance_pct}


def _parse_tolerance(value) -> float:
    text = str(value).strip().rstrip("%")
    try:
        tol = float(text)
    except ValueError:
        raise UserError(f"--tolerance takes a percentage such as 10 or 10% (got {value!r})") from None
    if not tol >= 0:
        raise UserError(f"--tolerance must be >= 0 percent (got {value!r})")
    return tol


def cli_regress(args) -> int:
    """Exit 0: no metric slower than the tolerance; 1: regressions (listed); UserError (exit 2): unlike runs."""
    tol = _parse_tolerance(getattr(args, "tolerance", DEFAULT_TOLERANCE_PCT))
    base, cur = load_result(args.baseline), load_result(args.current)
    res = compare(base, cur, tol)
    bad = [r for r in res["rows"] if r["regressed"]]
    env = cur["env"]
    print(f"comparing {len(res['rows'])} medians on {env.get('gpu_name') or env.get('cpu')}, torch {env.get('torch')}, "
          f"options {cur.get('options')}; tolerance +{tol:g}%")
    for r in res["rows"]:
        flag = "REGRESSED" if r["regressed"] else "ok"
        print(f"  {flag:9s} {r['metric']}: baseline {r['baseline_ms']:.3f} ms, current {r['current_ms']:.3f} ms, "
              f"{r['change_pct']:+.1f}%")
    if res["only_in_one"]:
        print(f"  not compared (in one run only): {', '.join(res['only_in_one'])}")
    if bad:
        print(f"{len(bad)} metric(s) slower than +{tol:g}%: " + "; ".join(
            f"{r['metric']} {r['baseline_ms']:.3f} -> {r['current_ms']:.3f} ms ({r['change_pct']:+.1f}%)" for r in bad))
        return 1
    print("no regression")
    return 0
