"""`sfv-bench regress BASELINE CURRENT --tolerance P`: compare the latency of two runs.

Inputs: two ``latency.json`` of `sfv-bench latency`, or two ``results.jsonl`` of `sfv-bench run`
(or the folders holding them). Meant for GPU runners (pytest-benchmark's maintainers call
saved-run comparison on shared CPU CI unreliable; the CPU gate is ``tests/e2e/test_gate_benchmark.py``).

* Only like runs are compared; otherwise a UserError names every differing field (the CLI prints
  one line and exits 2). latency.json: equal ``env.gpu_name``, ``env.torch``, every inference option
  (dtype, attention, channels_last, compile, cuda_graphs), the shape, the model sizes and the VAE
  decode chunk; for CPU runs (no GPU name) also ``env.cpu`` and ``env.threads``. results.jsonl: per
  method spec found in both, equal ``device_name``, ``dtype``, ``protocol`` and the timing
  pass's thread count (``latency.threads``, when recorded); reference rows (no UNet) are skipped.
* Metrics, each a timing summary (median, p10, p90; ms): latency.json -- every UNet pass
  (``unet_pass.<key>``), every component (``components.<key>``), per method spec the UNet loop and
  the end-to-end total (its band: the total plus the sums of its parts' p10 and p90 offsets);
  results.jsonl -- per method spec its ``latency`` (seconds, shown in ms).
* A NaN, infinite, non-positive or missing median fails: a UserError naming the file and metric.

Noise model. A metric regresses when both hold:

1. current median > baseline median x (1 + P/100)  (the slow-down matters), and
2. current p10 > baseline p90  (it is beyond the noise: the current run's fast repeats are slower
   than the baseline's slow ones).

Why rule 2: interference on a shared machine only adds time, so it fattens the slow tail of the
disturbed run; that widens the p10-p90 overlap and the two runs pass, even when their medians
differ by far more than P. A real slow-down moves every repeat, the fastest tenth included. The
rule uses the percentiles every summary records, assumes no distribution (timings are skewed, so a
mean +- k sd test would not fit), has no constant to tune, and falls back to rule 1 alone for a
single repeat (p10 = p90 = median). Interference that slows one whole measurement evenly looks
like a regression to any within-run rule: rerun on a quiet machine before trusting a failure.
Slower than P but within the noise is listed as ``noise`` and passes. Exit 1 on any regression
(listed with baseline, current and the change in percent), else 0.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from sfv_core.errors import UserError

from . import SCHEMA

DEFAULT_TOLERANCE_PCT = 10.0
WHAT = "pass the latency.json of `sfv-bench latency` or the results.jsonl of `sfv-bench run`"
RUN_IDENTITY = ("device_name", "dtype", "protocol")


def load_run(path) -> dict:
    """{'kind', 'path', 'about', 'identity': {spec or '': {field: value}}, 'metrics': {name: (median, p10, p90)}}."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("latency.json", "results.jsonl") if (path / n).is_file()]
        if not found:
            raise UserError(f"{path} is a folder without latency.json or results.jsonl: {WHAT}")
        path = found[0]
    if not path.is_file():
        raise UserError(f"{path} does not exist: {WHAT} (`sfv-bench latency --out DIR` writes DIR/latency.json)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a JSON file (not text): {WHAT}") from None
    if not text.strip():
        raise UserError(f"{path} is empty, not a latency.json or results.jsonl: {WHAT}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        data = _json_lines(path, text, e)
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return _latency_run(path, data)
    if isinstance(data, dict) and "spec" in data:
        data = [data]
    if isinstance(data, list) and data and all(isinstance(r, dict) and "spec" in r for r in data):
        return _results_run(path, data)
    got = data.get("schema") if isinstance(data, dict) else type(data).__name__
    raise UserError(f"{path} is not an `sfv-bench latency` result (schema {got!r}, expected {SCHEMA!r}) "
                    f"nor a `sfv-bench run` results.jsonl: {WHAT}")


def _json_lines(path: Path, text: str, first_error) -> list:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == 1:
                raise UserError(f"{path} is not a JSON file ({first_error}): {WHAT}") from None
            raise UserError(f"{path}:{i} is not a JSON record ({e}): fix or delete the line") from None
    return records


def _timing(path, name: str, median, p10=None, p90=None, scale: float = 1.0) -> tuple[float, float, float]:
    """(median, p10, p90) x scale; a missing p10/p90 means no spread is known (= the median)."""
    def bad(v):
        return isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)

    if bad(median) or median <= 0:
        raise UserError(f"{path}: {name} has median {median!r}, not a positive finite time: the run is broken, "
                        f"rerun it (a NaN or missing median never passes the gate)")
    for label, v in (("p10", p10), ("p90", p90)):
        if v is not None and bad(v):
            raise UserError(f"{path}: {name} has {label} {v!r}, not a finite time: rerun it")
    m = float(median)
    return m * scale, (m if p10 is None else float(p10)) * scale, (m if p90 is None else float(p90)) * scale


def _summary(path, name: str, s) -> tuple[float, float, float]:
    if not isinstance(s, dict):
        return _timing(path, name, s)
    return _timing(path, name, s.get("median_ms"), s.get("p10_ms"), s.get("p90_ms"))


def _latency_run(path: Path, r: dict) -> dict:
    env = r.get("env", {})
    out = {}
    for group in ("unet_pass", "components"):
        for key, s in r.get(group, {}).items():
            out[f"{group}.{key}"] = _summary(path, f"{group}.{key}", s)
    for m in r.get("methods", []):
        name = f"methods.{m['spec']}"
        loop = out[f"{name}.unet_loop_ms"] = _summary(path, f"{name}.unet_loop_ms",
                                                      m.get("unet_loop", m.get("unet_loop_ms")))
        e2e = m.get("e2e", {})
        total = _timing(path, f"{name}.e2e.total_ms", e2e.get("total_ms"))[0]
        frames = m.get("frames", e2e.get("frames_decoded"))
        parts = [out.get(f"components.{k}") for k in ("image_encoder", "vae_encode", f"vae_decode_{frames}f")]
        lo = hi = 0.0
        if all(parts):
            lo = sum(p[0] - p[1] for p in [*parts, loop])
            hi = sum(p[2] - p[0] for p in [*parts, loop])
        out[f"{name}.e2e.total_ms"] = (total, total - lo, total + hi)
    return {"kind": "latency.json", "path": path, "identity": {"": _identity(r)}, "metrics": out,
            "about": f"{env.get('gpu_name') or env.get('cpu')}, torch {env.get('torch')}, options {r.get('options')}"
                     + (f", load average {env['load_average']}" if env.get("load_average") is not None else "")}


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


def _results_run(path: Path, records: list[dict]) -> dict:
    ident, metrics = {}, {}
    for rec in records:
        spec, lat = rec["spec"], rec.get("latency") or {}
        if not lat and rec.get("status") == "ok":
            continue  # a reference row (real, static): no UNet, nothing timed
        if not lat:
            raise UserError(f"{path}: {spec}.latency has no median (record status {rec.get('status')!r}): "
                            f"a failed method never passes the gate, rerun it")
        ident[spec] = {**{k: rec.get(k) for k in RUN_IDENTITY}, "latency.threads": lat.get("threads")}
        metrics[f"{spec}.latency"] = _timing(path, f"{spec}.latency", lat.get("median_s"), lat.get("p10_s"),
                                             lat.get("p90_s"), scale=1e3)
    if not metrics:
        raise UserError(f"{path} holds no timed method (only reference rows): {WHAT}")
    first = next(r for r in records if r["spec"] in ident)
    return {"kind": "results.jsonl", "path": path, "identity": ident, "metrics": metrics,
            "about": f"{first.get('device_name')}, {first.get('dtype')}, protocol {first.get('protocol')}"}


def differences(baseline: dict, current: dict) -> list[str]:
    """'field (baseline vs current)' for every identity field that differs (per spec for results.jsonl)."""
    out = []
    for spec in [s for s in baseline["identity"] if s in current["identity"]]:
        a, b = baseline["identity"][spec], current["identity"][spec]
        for key in dict.fromkeys([*a, *b]):
            if a.get(key) != b.get(key):
                out.append(f"{spec + ': ' if spec else ''}{key} ({a.get(key)!r} vs {b.get(key)!r})")
    return out


def compare(baseline: dict, current: dict, tolerance_pct: float) -> dict:
    """{'rows': [{metric, baseline, current (median, p10, p90), change_pct, slower, regressed}], 'only_in_one'}."""
    if baseline["kind"] != current["kind"]:
        raise UserError(f"cannot compare a {baseline['kind']} ({baseline['path']}) with a {current['kind']} "
                        f"({current['path']}): pass two of the same kind")
    diff = differences(baseline, current)
    if diff:
        raise UserError("runs are not comparable, they differ in " + "; ".join(diff)
                        + " -- compare runs of the same device, torch version, options and shape")
    a, b = baseline["metrics"], current["metrics"]
    common = [k for k in a if k in b]
    if not common:
        raise UserError("the two runs share no metric (different method specs?)")
    rows = []
    for k in common:
        change = (b[k][0] - a[k][0]) / a[k][0] * 100.0
        slower = b[k][0] > a[k][0] * (1.0 + tolerance_pct / 100.0)
        rows.append({"metric": k, "baseline": a[k], "current": b[k], "change_pct": change, "slower": slower,
                     "regressed": slower and b[k][1] > a[k][2]})
    return {"rows": rows, "only_in_one": sorted(set(a) ^ set(b)), "tolerance_pct": tolerance_pct}


def _parse_tolerance(value) -> float:
    text = str(value).strip().rstrip("%")
    try:
        tol = float(text)
    except ValueError:
        raise UserError(f"--tolerance takes a percentage such as 10 or 10% (got {value!r})") from None
    if not tol >= 0:
        raise UserError(f"--tolerance must be >= 0 percent (got {value!r})")
    return tol


def _band(t) -> str:
    return f"{t[0]:.3f} ms [p10 {t[1]:.3f}, p90 {t[2]:.3f}]"


def cli_regress(args) -> int:
    """Exit 0: no regression beyond tolerance and noise; 1: regressions (listed); UserError (exit 2): unlike
    runs, wrong files, broken medians."""
    tol = _parse_tolerance(getattr(args, "tolerance", DEFAULT_TOLERANCE_PCT))
    base, cur = load_run(args.baseline), load_run(args.current)
    res = compare(base, cur, tol)
    bad = [r for r in res["rows"] if r["regressed"]]
    noisy = [r for r in res["rows"] if r["slower"] and not r["regressed"]]
    print(f"comparing {len(res['rows'])} medians ({cur['kind']}) on {cur['about']}; a metric regresses when its "
          f"median is over +{tol:g}% and the current p10 is above the baseline p90")
    for r in res["rows"]:
        flag = "REGRESSED" if r["regressed"] else "noise" if r["slower"] else "ok"
        print(f"  {flag:9s} {r['metric']}: baseline {_band(r['baseline'])}, current {_band(r['current'])}, "
              f"{r['change_pct']:+.1f}%")
    if res["only_in_one"]:
        print(f"  not compared (in one run only): {', '.join(res['only_in_one'])}")
    if noisy:
        print(f"{len(noisy)} metric(s) slower than +{tol:g}% but within the noise (the runs' p10-p90 bands "
              f"overlap): rerun on a quiet machine to decide")
    if bad:
        print(f"{len(bad)} metric(s) slower than +{tol:g}% beyond the noise: " + "; ".join(
            f"{r['metric']} {r['baseline'][0]:.3f} -> {r['current'][0]:.3f} ms ({r['change_pct']:+.1f}%)"
            for r in bad))
        return 1
    print("no regression")
    return 0
