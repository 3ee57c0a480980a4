"""The latency result as JSON and as a Markdown table beside the paper's A100 figures."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from sfv_core.fsutil import atomic_write_json, atomic_write_text
from sfv_core.paper import GPU, table1_rows

from .models import SHAPES, Shape
from .options import Options

FULL_UNET_PARAMS_B = 1.525  # the SVD UNet (random full-size configs and the real svd / svd-xt weights alike)


def _fmt_ms(ms) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _tf(x) -> str:
    return f"{x / 1e12:.3g} T" if x >= 1e11 else f"{x / 1e9:.3g} G"


def render_markdown(r: dict) -> str:
    """latency.md: the settings, the methods beside the paper's figures, the end-to-end breakdown, the
    precision check's candidates and the FLOPs."""
    sections = (_summary_lines(r), _table1_lines(r), _breakdown_lines(r), _candidate_lines(r["precision_check"]),
                _flops_lines(r))
    return "\n".join(line for section in sections for line in section) + "\n"


def _summary_lines(r: dict) -> list[str]:
    """The title and one line per setting: device, options, shape, UNet pass, peak memory, precision, decode."""
    env, o, sh = r["env"], r["options"], r["shape"]
    dev = env["gpu_name"] or f"CPU ({env['cpu']}, {env['threads']} threads)"
    lat = "x".join(map(str, sh["latent"]))
    b1, b2 = r["unet_pass"]["batch1"], r["unet_pass"]["batch2"]
    pc = r["precision_check"]
    return [
        "# Latency: denoising process (UNet) and end to end",
        "",
        f"- Device: {dev}; driver {env['driver'] or '—'}; torch {env['torch']}, CUDA {env['cuda'] or '—'}, "
        f"diffusers {env['diffusers']}; clock {env['clock']}",
        f"- Options: {Options(**o).label()} (dtype {o['dtype']}, attention {o['attention']}, channels_last "
        f"{'on' if o['channels_last'] else 'off'}, torch.compile {'on' if o['compile'] else 'off'}, CUDA graphs "
        f"{'on' if o['cuda_graphs'] else 'off'})",
        f"- Shape: {sh['name']} -- {sh['num_frames']} frames {sh['width']}x{sh['height']}, latent {lat}; "
        f"models: {r['models']['source']} (UNet {r['models']['unet_params'] / 1e6:.1f} M parameters)",
        f"- UNet pass: batch 1 {_fmt_ms(b1['median_ms'])} (p10 {_fmt_ms(b1['p10_ms'])}, p90 {_fmt_ms(b1['p90_ms'])}, "
        f"n={b1['n']}), batch 2 {_fmt_ms(b2['median_ms'])}; FLOPs {_tf(r['flops']['unet_batch1'])} / "
        f"{_tf(r['flops']['unet_batch2'])}; achieved {r['tflops_achieved']['unet_batch1']:.3g} / "
        f"{r['tflops_achieved']['unet_batch2']:.3g} TFLOP/s",
        "- Peak memory (batch-1 pass, all models resident): "
        + (f"{r['peak_mem_bytes'] / 2**30:.2f} GiB" if r["peak_mem_bytes"] else
           f"n/a on CPU (process peak RSS {(r['peak_rss_bytes'] or 0) / 2**30:.2f} GiB)"),
        f"- Precision check: {pc['chosen_rel_l2']:.2e} relative L2 vs {pc['reference']} (tolerance "
        f"{pc['tolerance']}): {'pass' if pc['passed'] else 'FAIL'}; {len(pc['candidates'])} configuration(s) tried",
        f"- VAE decode chunk size: {r['decode_chunk_size']}",
    ]


def _table1_lines(r: dict) -> list[str]:
    """Table 1's rows (the paper's figure beside ours), the other timed methods, and the notes on the ratio
    and on loops far from their estimate."""
    lines = [
        "",
        f"Latency of the denoising process (all UNet calls of one video), beside the paper's {GPU} figures:",
        "",
        "| Method | Steps | UNet calls x batch | Paper (s) | UNet, calls x median (s) | UNet loop (s) | "
        "End to end (s) | Paper / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = {m["spec"]: m for m in r["methods"]}
    done = set()
    why_not = _why_no_ratio(r)
    for p in table1_rows():
        m = measured.get(p["spec"]) if p["spec"] else None
        if m is None:
            lines.append(f"| {p['name']} | {p['steps']} | — | {p['latency_s']:.2f} | — | — | — | — |")
            continue
        done.add(m["spec"])
        lines.append(_method_line(p["name"], m, p["latency_s"], ratio=not why_not))
    for m in r["methods"]:
        if m["spec"] not in done:
            lines.append(_method_line(m["spec"], m, None))
    if why_not:
        lines += ["", f"Paper / ours is shown only for the paper's shape (14 frames 1024x576, full-size models) "
                      f"on a GPU; this run {why_not}, so its times are not comparable with the paper's {GPU} figures."]
    odd = [m for m in r["methods"] if not 0.67 <= (m.get("loop_vs_estimate") or 1.0) <= 1.5]
    for m in odd:
        lines += ["", f"IMPLAUSIBLE: the {m['spec']} loop took {m['loop_vs_estimate']:.1f}x its estimate (calls x "
                      f"median pass): a busy machine or too many threads? Rerun (on CPU with --threads 1)."]
    return lines


def _breakdown_lines(r: dict) -> list[str]:
    """Each method's end-to-end medians: image encoder, VAE encode, UNet loop, VAE decode, total."""
    lines = ["", "End-to-end breakdown (medians):", "",
             "| Method | Image encoder | VAE encode | UNet loop | VAE decode (frames, chunk) | Total |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in r["methods"]:
        e = m["e2e"]
        lines.append(f"| {m['spec']} | {_fmt_ms(e['image_encoder_ms'])} | {_fmt_ms(e['vae_encode_ms'])} | "
                     f"{_fmt_ms(e['unet_loop_ms'])} | {_fmt_ms(e['vae_decode_ms'])} ({e['frames_decoded']}, "
                     f"{e['decode_chunk_size']}) | {_fmt_ms(e['total_ms'])} |")
    return lines


def _candidate_lines(pc: dict) -> list[str]:
    """The option search's configurations: median pass, error against fp32 eager, pass / fail."""
    lines = ["", "Precision check candidates:", "", "| Configuration | Median batch-1 pass | Rel. L2 vs fp32 | Pass |",
             "|---|---:|---:|---|"]
    for c in pc["candidates"]:
        if c.get("error"):
            lines.append(f"| {c['label']} | — | — | not run: {c['error']} |")
        else:
            lines.append(f"| {c['label']} | {_fmt_ms(c['median_ms'])} | {c['rel_l2']:.2e} | "
                         f"{'yes' if c['passed'] else 'no'} |")
    return lines


def _flops_lines(r: dict) -> list[str]:
    lines = ["", "FLOPs (counted with torch.utils.flop_counter on the meta device):", "",
             "| Part | FLOPs |", "|---|---:|"]
    return lines + [f"| {k} | {_tf(v)} |" for k, v in r["flops"].items()]


def _why_no_ratio(r: dict) -> str:
    """Why the paper's A100 figure cannot be divided by ours ('' when it can)."""
    sh, reasons = r["shape"], []
    if sh["name"] != "paper" or (sh["num_frames"], sh["height"], sh["width"]) != SHAPES["paper"]:
        reasons.append(f"measured {sh['num_frames']} frames {sh['width']}x{sh['height']} ({sh['name']} shape)")
    unet_b = r["models"]["unet_params"] / 1e9
    if round(unet_b, 3) != FULL_UNET_PARAMS_B:
        reasons.append(f"used a {unet_b * 1e3:.3g} M-parameter UNet, not the full-size {FULL_UNET_PARAMS_B} B")
    if not r["env"].get("gpu_name"):
        reasons.append("ran on a CPU")
    return " and ".join(reasons)


def _method_line(name, m, paper_s, ratio: bool = True) -> str:
    ratio = f"{paper_s * 1e3 / m['unet_ms_median']:.2f}x" if paper_s and ratio else "—"
    return (f"| {name} | {m['steps']} | {m['calls']} x {m['batch']} | "
            f"{f'{paper_s:.2f}' if paper_s else '—'} | {m['unet_ms_median'] / 1e3:.3f} | "
            f"{m['unet_loop_ms'] / 1e3:.3f} | {m['e2e']['total_ms'] / 1e3:.3f} | {ratio} |")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_out_dir(shape: Shape, device: str) -> Path:
    """runs/latency/<shape>-<device slug>: beside the other run outputs, outside the committed results/."""
    name = torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else "cpu"
    return Path("runs") / "latency" / f"{shape.name}-{_slug(name)}"


def write_results(result: dict, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    js, md = out_dir / "latency.json", out_dir / "latency.md"
    atomic_write_json(js, result)
    atomic_write_text(md, render_markdown(result))
    return js, md
