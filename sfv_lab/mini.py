"""`sfv-bench build-mini OUT`: build the mini world from scratch, resumably, and (``--install``) ship it.

Stages, each a folder of OUT and skipped once it has its ``done.json`` (``--resume`` continues a
killed stage from its last checkpoint; every trainer is a ``sfv_train.loop.TrainLoop``):

    dataset      the evaluation dataset (make_synthetic: 10 classes x 10 groups x 5 clips) in the cache
    pool         training clips from the generator, training groups only (sfv_train.pool)
    vae-frames   the temporal VAE on single frames, temporal taps zeroed (sfv_train.autoencoder)
    vae-tune     the same, continued from vae-frames' export with a second, low-lr cosine; its latent
                 std sets scaling_factor
    stack-init   the pipeline folder: that VAE, a frozen random CLIP, a random UNet
    teacher      the UNet trained as SVD is (EDM, v-prediction, conditioning dropout for CFG)
    detector     the FVD detector: an I3D trained on the synthetic classes (sfv_train.classifier)
    world        the shipped layout (fp16 weights, manifest.json with every sha256, build.json)
    distill-M    for M in sfv, ufogen, ladd, lcm: training with ``stack="mini"``, ``method=M`` and
                 ``mini_world=OUT/world`` from the teacher (sfv_lab.distill: the paper's presets, scaled as
                 the size forces), shipped as unets/M
    evaluate     quality figures and curves into OUT/results/ (results/mini/ with --install)

Times per stage and the machine are recorded in build.json. The result is reproducible with the
same thread count and device (CPU float32 sums depend on the thread count).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from methods.models.configs import MINI_CONFIGS
from methods.models.mini import SHIPPED
from methods.models.stacks import build_pipeline, load_pipeline, save_stack
from sfv_core.data.synthetic import class_names, default_dataset_root, make_synthetic
from sfv_core.data.ucf101 import UCF101, load_sample, select_videos
from sfv_core.env import cpu_name, device_name, git_commit, resolve_device, versions
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, atomic_write_text, sha256_file
from sfv_core.protocol import WORLDS, Protocol
from sfv_train.autoencoder import AutoencoderTrainer, VAEConfig, heldout_psnr, load_vae, psnr
from sfv_train.diffusion import DiffusionConfig, DiffusionTrainer
from sfv_train.pool import PoolSpec, build_pool

from .distill import STEPS as DISTILL_STEPS
from .distill import distil, ship_unet

log = logging.getLogger(__name__)
WORLD = WORLDS["mini"]
# Steps of each trainer (fixed, so the build is deterministic); ``--scale`` multiplies them.
STEPS = {"vae-frames": 8000, "vae-tune": 5000, "teacher": 10000, "detector": 3000,
         **{f"distill-{m}": n for m, n in DISTILL_STEPS.items()}}
TEACHER = dict(batch_size=8, lr=3e-4, min_lr_ratio=0.1, ema_decay=0.999)    # the probe's stable recipe


def mini_protocol(**kw) -> Protocol:
    return Protocol(**{**WORLD.protocol, **kw})


def heldout_clips(n: int = 150) -> tuple[np.ndarray, list[int]]:
    """Real test clips of the evaluation dataset at the mini size (VAE PSNR, detector checks) and their classes."""
    root = default_dataset_root(**WORLD.dataset)
    make_synthetic(root, **WORLD.dataset)
    p = mini_protocol(num_videos=n)
    ds = UCF101(root)
    refs = select_videos(ds, p)
    names = class_names(WORLD.dataset["classes"])        # slot order, as the pool's labels
    return np.stack([load_sample(r, p).real_clip for r in refs]), [names.index(r.label) for r in refs]


class Build:
    """The build folder OUT: its stages (each skipped once done), their step counts and build.json."""

    def __init__(self, out: Path, device: str, threads: int, scale: float, resume: bool, progress: bool = True):
        self.out, self.device, self.threads, self.scale = out, device, threads, scale
        self.resume, self.progress = resume, progress
        self.record_path = out / "build.json"
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {
            "command": "sfv-bench build-mini", "stages": {}}

    def steps(self, stage: str) -> int:
        return max(1, int(round(STEPS[stage] * self.scale)))

    def stage(self, name: str, fn) -> Path:
        folder = self.out / name
        done = folder / "done.json"
        if done.is_file():
            info = json.loads(done.read_text())
            log.info(f"[{name}] done ({info.get('seconds', 0):.0f} s), skipped")
            if name not in self.record["stages"]:      # finished by another call of this build (another process)
                self.record["stages"][name] = {**info, "seconds": round(info.get("seconds", 0), 1)}
            return folder
        if folder.exists() and not self.resume and any(folder.iterdir()):
            raise UserError(f"{folder} holds an unfinished stage: pass --resume to continue it, or delete it")
        folder.mkdir(parents=True, exist_ok=True)
        log.info(f"[{name}] start")
        clock = folder / "elapsed.json"           # this stage's own time, summed over interrupted calls
        before = json.loads(clock.read_text())["seconds"] if clock.is_file() else 0.0
        t0 = time.time()
        try:
            info = fn(folder) or {}
        finally:
            atomic_write_json(clock, {"seconds": before + time.time() - t0})
        seconds = before + time.time() - t0
        atomic_write_json(done, {"seconds": seconds, **info})
        self.record["stages"][name] = {"seconds": round(seconds, 1), **info}
        self.record.update(machine={"device": device_name(self.device), "cpu": cpu_name(), "threads": self.threads},
                           versions=versions(), git_commit=git_commit())
        atomic_write_json(self.record_path, self.record)
        log.info(f"[{name}] done in {seconds:.0f} s")
        return folder


def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def scrub_names(world: Path) -> None:
    """No build-machine path in a shipped config: ``_name_or_path`` becomes the folder's place in the world."""
    for cfg in sorted(world.rglob("config.json")):
        data = json.loads(cfg.read_text())
        rel = cfg.parent.relative_to(world).as_posix()
        if isinstance(data, dict) and data.get("_name_or_path", rel) != rel:
            data["_name_or_path"] = rel
            atomic_write_text(cfg, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_manifest(world: Path) -> dict:
    scrub_names(world)
    files = {p.relative_to(world).as_posix(): sha256_file(p) for p in sorted(world.rglob("*"))
             if p.is_file() and p.name not in ("manifest.json", "build.json", "done.json")}
    atomic_write_json(world / "manifest.json", {"files": files})
    return files


def assemble_stack(vae_dir: Path, scaling: float, out: Path, unet=None, seed: int = 0) -> Path:
    """The mini pipeline folder: the trained VAE (scaling_factor set), a seeded random frozen CLIP, and
    ``unet`` (default: a seeded random one)."""
    from diffusers import AutoencoderKLTemporalDecoder

    vae = AutoencoderKLTemporalDecoder.from_pretrained(vae_dir)
    vae.register_to_config(scaling_factor=float(scaling))
    if out.exists():
        shutil.rmtree(out)
    save_stack(build_pipeline(MINI_CONFIGS, seed, vae=vae, unet=unet), out)
    return out


def install(world: Path, record: Path, results: Path, repo_results: Path) -> None:
    """Ship: OUT/world (+ OUT/build.json) -> methods/models/mini/, OUT/evaluate -> results/mini/."""
    copy_tree(world, SHIPPED)
    shutil.copy2(record, SHIPPED / "build.json")
    repo_results.mkdir(parents=True, exist_ok=True)
    for f in results.iterdir():
        if f.is_file() and f.name != "done.json":
            shutil.copy2(f, repo_results / f.name)
    shutil.copy2(record, repo_results / "build.json")


def load_stack(folder: Path):
    return load_pipeline(folder, "cpu", torch.float32)


# ------------------------------------------------------------------------------------------ figures

def plot_curves(stages: dict, path: Path) -> None:
    """Loss vs step of every trainer (from its logs/metrics.jsonl), one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for name, (folder, key) in stages.items():
        f = folder / "logs" / "metrics.jsonl"
        if f.is_file():
            pts = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            rows[name] = [(p["step"], p[key]) for p in pts if key in p]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 2.8), dpi=110)
    for ax, (name, pts) in zip(np.atleast_1d(axes), rows.items()):
        ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def motion(clips: np.ndarray) -> float:
    """Mean absolute frame-to-frame change (uint8 levels) of (N, T, H, W, 3) clips."""
    c = clips.astype(np.float32)
    return float(np.abs(c[:, 1:] - c[:, :-1]).mean())


def generation_figures(stack: Path, n: int = 16, steps: int = 25) -> dict:
    """svd:N on n test conditions: frame-0 PSNR against the (stretched) conditioning frame, motion of
    generated vs real clips, at the scoring size."""
    from methods.registry import get_method
    from sfv_core.seeds import sample_seed

    root = default_dataset_root(**WORLD.dataset)
    p = mini_protocol(num_videos=n)
    refs = select_videos(UCF101(root), p)
    samples = [load_sample(r, p) for r in refs]
    m = get_method(f"svd:{steps}").load(str(stack), "cpu", torch.float32)
    videos = m.generate([s.cond_image for s in samples], [sample_seed(p.seed, r.seed_name) for r in refs],
                        p.conditions())
    m.unload()
    from sfv_core.data.transforms import fit_images

    cond = fit_images([s.cond_image for s in samples], p.gen_width, p.gen_height)[1]
    reals = np.stack([s.real_clip for s in samples])
    return {"spec": f"svd:{steps}", "videos": n, "frame0_psnr_db": float(psnr(videos[:, 0], cond).mean()),
            "motion_generated": motion(videos), "motion_real": motion(reals)}


# ------------------------------------------------------------------------------------------ the build

def _loop_kw(b: "Build", folder: Path, stage: str) -> dict:
    resume = "latest" if b.resume and (folder / "checkpoints").is_dir() else ""
    return dict(out=str(folder), resume=resume, max_steps=b.steps(stage), device=b.device, seed=0,
                report_to="none", progress=b.progress, checkpoints_total_limit=2,
                checkpoint_every=max(50, b.steps(stage) // 8), log_every=max(10, b.steps(stage) // 200))


def build_mini(out: Path, *, device: str = "auto", threads: int = 0, scale: float = 1.0, resume: bool = False,
               install_to_repo: bool = False, progress: bool = True) -> Path:
    """Run every stage (see the module doc); returns OUT/world."""
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    b = Build(out, device, torch.get_num_threads(), scale, resume, progress)
    b.record.update(scale=scale, steps={k: b.steps(k) for k in STEPS})
    held, labels = heldout_clips()
    b.stage("dataset", lambda f: {"root": str(default_dataset_root(**WORLD.dataset)), "heldout_clips": len(held)})
    spec = PoolSpec()
    b.record.update(pool=dataclasses.asdict(spec))
    b.stage("pool", lambda f: (build_pool(spec, f), {"clips": spec.size})[1])
    pool = build_pool(spec, out / "pool")

    def vae(f):
        AutoencoderTrainer(VAEConfig(stage="frames", **_loop_kw(b, f, "vae-frames")), pool, held, labels).run()
        return json.loads((f / "export" / "quality.json").read_text())

    frames = b.stage("vae-frames", vae)

    def tune(f):     # a second, low-lr cosine from the first one's export: the last 0.2-0.5 dB
        AutoencoderTrainer(VAEConfig(stage="frames", init=str(frames / "export" / "vae"), lr=2e-4, warmup_steps=50,
                                     **_loop_kw(b, f, "vae-tune")), pool, held, labels).run()
        return json.loads((f / "export" / "quality.json").read_text())

    clips = b.stage("vae-tune", tune)
    quality = json.loads((clips / "export" / "quality.json").read_text())
    scaling = 1.0 / quality["latent_std"]
    init = b.stage("stack-init", lambda f: (assemble_stack(clips / "export" / "vae", scaling, f / "stack"),
                                            {"scaling_factor": scaling})[1])
    teacher = b.stage("teacher", lambda f: (DiffusionTrainer(DiffusionConfig(
        stack=str(init / "stack"), **TEACHER, **_loop_kw(b, f, "teacher")), pool, held).run(), {})[1])
    detector = b.stage("detector", lambda f: train_detector(b, f, pool, spec, held, labels))
    world = b.stage("world", lambda f: assemble_world(f, clips, scaling, teacher, detector))
    distilled = {m: b.stage(f"distill-{m}", lambda f, m=m: distill_stage(b, f, m, world)) / "run"
                 for m in DISTILL_STEPS}
    curves = {"vae": (frames, "mse"), "vae-tune": (clips, "mse"), "teacher": (teacher, "loss"),
              "detector": (detector, "loss")}
    b.stage("evaluate", lambda f: evaluate(world, held, labels, f, curves, distilled))
    if install_to_repo:
        install(world, b.record_path, out / "evaluate", Path(__file__).resolve().parents[1] / "results" / "mini")
        log.info(f"installed the mini world into {SHIPPED} and its figures into results/mini/")
    return world


def train_detector(b: Build, folder: Path, pool, spec: PoolSpec, held, labels) -> dict:
    """The FVD detector (sfv_train.classifier) on the pool, checked on the held-out test clips."""
    from sfv_train.classifier import DetectorConfig, DetectorTrainer, pool_labels

    cfg = DetectorConfig(**_loop_kw(b, folder, "detector"))
    DetectorTrainer(cfg, pool, pool_labels(spec), held, np.asarray(labels)).run()
    return json.loads((folder / "export" / "detector.json").read_text())["figures"]


def distill_stage(b: Build, folder: Path, method: str, world: Path) -> dict:
    """One distilled row: trained in ``world`` into folder/run, its EMA UNet shipped as world/unets/<method>."""
    unet = distil(method, folder / "run", b.steps(f"distill-{method}"), world=world, progress=b.progress)
    ship_unet(unet, world, method)
    write_manifest(world)
    best = folder / "run" / "fvd_best.json"
    return json.loads(best.read_text()) if best.is_file() else {}


def assemble_world(folder: Path, vae_run: Path, scaling: float, teacher_run: Path, detector_run: Path) -> dict:
    """folder/stack (fp16 weights: the teacher's EMA UNet), folder/detector, manifest.json."""
    from diffusers import UNetSpatioTemporalConditionModel

    unet = UNetSpatioTemporalConditionModel.from_pretrained(teacher_run / "export" / "unet")
    vae = load_vae(vae_run / "export" / "vae")
    vae.register_to_config(scaling_factor=float(scaling))
    save_stack(build_pipeline(MINI_CONFIGS, 0, vae=vae, unet=unet), folder / "stack", dtype=torch.float16)
    copy_tree(detector_run / "export", folder / "detector")
    files = write_manifest(folder)
    return {"files": len(files), "bytes": sum((folder / k).stat().st_size for k in files)}


def evaluate(world: Path, held: np.ndarray, labels, folder: Path, curves: dict, distilled: dict) -> dict:
    """The world's quality figures as shipped (fp16 weights): VAE PSNR, svd:25 frame-0 PSNR and motion;
    the training curves; each distilled run's FVD-vs-step curve and best step."""
    stack = load_stack(world / "stack")
    figures = {"vae_psnr_db": heldout_psnr(stack.vae, held, labels, held.shape[1], "cpu"),
               "generation": generation_figures(world / "stack"), "distilled": {}}
    plot_curves(curves, folder / "training_curves.png")
    for m, run in distilled.items():
        if (run / "fvd_vs_step.png").is_file():
            shutil.copy2(run / "fvd_vs_step.png", folder / f"fvd_vs_step_{m}.png")
        if (run / "fvd_best.json").is_file():
            figures["distilled"][m] = json.loads((run / "fvd_best.json").read_text())
    atomic_write_json(folder / "quality.json", figures)
    return figures
