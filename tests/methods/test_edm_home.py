"""methods.models.edm is the one home of the EDM scalings: its functions keep diffusers' arithmetic bit for
bit, the trainer's discriminator input is edm's scaling, and no other source file writes the formulas again."""
from __future__ import annotations

import ast
from pathlib import Path

import torch

from methods.models import edm

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "methods", "sfv_core", "sfv_train", "benchmarks")
HOME = ROOT / "methods" / "models" / "edm.py"


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value == value


def _calls_log(node) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == "log"
               for n in ast.walk(node))


def _is_square(node) -> bool:
    """s ** 2 or s * s."""
    return isinstance(node, ast.BinOp) and (
        (isinstance(node.op, ast.Pow) and _is_const(node.right, 2))
        or (isinstance(node.op, ast.Mult) and ast.dump(node.left) == ast.dump(node.right)))


def edm_formulas(tree) -> list[int]:
    """Lines writing c_noise (0.25 * ... log ...) or sigma^2 + 1 (the root of c_in, c_skip, c_out)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.BinOp):
            continue
        if isinstance(node.op, ast.Mult) and any(_is_const(a, 0.25) and _calls_log(b) for a, b in
                                                 ((node.left, node.right), (node.right, node.left))):
            lines.append(node.lineno)
        if isinstance(node.op, ast.Add) and any(_is_const(a, 1) and _is_square(b) for a, b in
                                                ((node.left, node.right), (node.right, node.left))):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_guard_finds_the_formulas():
    src = ("t = 0.25 * s.log()\nu = 0.25 * math.log(700)\nc = x / (s * s + 1).sqrt()\nd = (s ** 2 + 1) ** 0.5\n"
           "ok = x / (a * b + 1)\nok2 = 0.25 * s\n")
    assert edm_formulas(ast.parse(src)) == [1, 2, 3, 4]
    assert edm_formulas(ast.parse(HOME.read_text()))          # and edm.py does write them


def test_edm_scalings_are_written_only_in_edm_py():
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path != HOME and (lines := edm_formulas(ast.parse(path.read_text()))):
                found[str(path.relative_to(ROOT))] = lines
    assert not found, f"EDM scalings written outside methods/models/edm.py (call its functions): {found}"


def test_edm_functions_keep_the_scheduler_arithmetic_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    for s in (torch.tensor(700.0), torch.tensor(0.002), torch.tensor([0.5, 70.54]).view(-1, 1, 1, 1, 1)):
        assert torch.equal(edm.scale_input(x, s), x / ((s ** 2 + 1) ** 0.5))
        assert torch.equal(edm.denoised(x, v, s), v * (-s / (s ** 2 + 1) ** 0.5) + x / (s ** 2 + 1))
        assert torch.equal(edm.c_noise(s), 0.25 * s.log())
        c_skip, c_out, c_in, c_noise = edm.scalings(s)
        torch.testing.assert_close(edm.denoised(x, v, s), c_skip * x + c_out * v)
        torch.testing.assert_close(edm.scale_input(x, s), c_in * x)
    half = v.half()[:1]                       # float16 model output, scalar sigma: c_out v in float16 first
    s = edm.scalar_sigma(13.678)
    assert torch.equal(edm.denoised(x[:1], half, s), half * (-s / (s ** 2 + 1) ** 0.5) + x[:1] / (s ** 2 + 1))
    assert edm.noise_scale(700.0) == (700.0 ** 2 + 1) ** 0.5
    assert torch.equal(edm.noise_scale(torch.tensor(700.0)), (torch.tensor(700.0) ** 2 + 1) ** 0.5)


def test_the_trainers_discriminator_input_is_edms_scaling():
    from sfv_train.trainer import Trainer

    t = Trainer.__new__(Trainer)
    t.device, t.bf16 = torch.device("cpu"), False
    seen = {}
    t.D = lambda x_in, timestep, *cond: seen.update(x_in=x_in, timestep=timestep)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    sigma_d = torch.tensor([0.5, 70.54], dtype=torch.float64)
    s = sigma_d.float().view(-1, 1, 1, 1, 1)
    assert torch.equal(t._d_input(x, sigma_d, eps), edm.scale_input(x + s * eps, s))
    t._disc(t._d_input(x, sigma_d, eps), sigma_d, {"cond_latent": None, "image_embeds": None, "added_time_ids": None})
    assert torch.equal(seen["timestep"], edm.scalings(sigma_d.float())[3])
