"""What ``sfv-train --estimate-memory`` prints for a :class:`sfv_train.memory.Estimate`."""
from __future__ import annotations

from .memory import BACKWARD, CARDS, FORWARD, GiB, MARGIN_FRACTION, MARGIN_GIB, Estimate

RESIDENT_ORDER = ("generator weights", "gradients", "optimiser state", "EMA", "D frozen encoder", "D heads",
                  "VAE and CLIP image encoder")


def report(e: Estimate, processes: int = 8) -> str:
    """What ``sfv-train --estimate-memory`` prints: the make-up of each phase's peak, the run's per-GPU
    peak with one and with ``processes`` processes, the other R1 variants, what is not counted, the margin."""
    c = e.cfg
    unit, scale = ("GiB", GiB) if e.peak(processes=processes) >= GiB else ("MiB", 2 ** 20)

    def fmt(n: int) -> str:
        return f"{n / scale:.1f} {unit}"

    def col(n: int) -> str:
        return f"{n / scale:.2f}"

    lines = [f"sfv-train --estimate-memory: --method {c.method} --stack {c.stack}, {c.width}x{c.height}, "
             f"{c.num_frames} frames, batch {c.batch_size} x {c.grad_accum} micro-batches per GPU, "
             f"{'bf16 autocast' if e.bf16 else 'float32'} on {e.target}, gradient checkpointing "
             f"{'on' if c.gradient_checkpointing else 'off'}, {c.optimizer}, --r1 {c.r1}",
             "counted on fake tensors (the stack's configurations, random initialisation: no GPU, no weights, "
             f"nothing allocated); {unit} of live tensors, as torch.cuda.max_memory_allocated counts them", ""]
    g_only = dict(e.g_at_peak)
    lines.append(f"{'':32s}{'G phase':>9s}" + "".join(f"{'D, r1 ' + v:>14s}" for v in e.d_peaks))
    labels = [k for k in RESIDENT_ORDER] + [FORWARD, BACKWARD]
    labels += sorted(({k for _, at in e.d_peaks.values() for k in at} | set(g_only)) - set(labels))
    for label in labels:
        row = [g_only.get(label, 0)] + [at.get(label, 0) for _, at in e.d_peaks.values()]
        if any(row):
            lines.append(f"  {label:30s}{col(row[0]):>9s}" + "".join(f"{col(v):>14s}" for v in row[1:]))
    lines.append(f"  {'peak':30s}{col(e.g_peak):>9s}" + "".join(f"{col(p):>14s}" for p, _ in e.d_peaks.values()))
    if "none" in e.d_peaks:
        base = e.d_peaks["none"][0]
        lines.append(f"  {'R1 (D phase over --r1 none)':30s}{'':>9s}" + "".join(
            f"{col(p - base):>14s}" for p, _ in e.d_peaks.values()))
    lines.append("")
    lines.append(f"(the D phases run on the G phase's samples; {e.accum_run} micro-batch(es) run: the second holds "
                 f"the first's gradients, later ones repeat it)")
    lines.append("")
    one, many = e.peak(processes=1), e.peak(processes=processes)
    lines += [f"per-GPU peak, --r1 {c.r1}{' (its R1 steps)' if c.r1 == 'lazy' else ''}: {fmt(one)} in one "
              f"process; {fmt(many)} with {processes} processes (+ DDP's gradient buckets, {fmt(e.ddp_buckets)})",
              f"not counted: the caching allocator's fragmentation, the CUDA context and kernels, cuBLAS/cuDNN "
              f"workspaces, NCCL buffers; margin for them: {MARGIN_FRACTION:.0%} + {MARGIN_GIB:g} GiB -> plan for "
              f"{e.planned(many):.1f} GiB per GPU"]
    for variant in e.d_peaks:
        if variant != e.d_variant():
            lines.append(f"  with --r1 {variant}: {fmt(e.peak(variant, processes))} with {processes} processes "
                         f"(plan for {e.planned(e.peak(variant, processes)):.1f} GiB)")
    fits = [f"{card}: {'yes' if e.fits(gib, processes=processes) else 'no'}" for card, gib in CARDS.items()]
    lines.append(f"fits (the planned figure against the card's {', '.join(f'{g:g}' for g in CARDS.values())} GiB): "
                 + ", ".join(fits))
    return "\n".join(lines)
