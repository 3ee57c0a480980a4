"""Labelled previews: per video one row "condition | real | generated", as <stem>.gif and <stem>.mp4.

Layout (top to bottom): the title, the column captions, then per row its label and its frames.
Every picture is scaled to one height: the tallest one, at least MIN_HEIGHT (small frames are
upscaled nearest-neighbour, so a 32x32 video stays visible and sharp) and at most MAX_HEIGHT
(larger ones are downscaled, antialiased). Text is PIL's default font. A row without a real clip
shows an empty cell. Clips of different lengths hold their last frame. Both files are written
atomically; the GIF is ``sfv_core.data.videoio.gif_bytes`` (one fast-octree palette per frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfv_core.fsutil import atomic_write_bytes

MIN_HEIGHT = 128
MAX_HEIGHT = 240
GAP = 4
BACKGROUND = 24
TEXT = (235, 235, 235)
CAPTIONS = ("condition", "real", "generated")


def _check(a, shape_rank: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != shape_rank or a.shape[-1] != 3 or 0 in a.shape:
        want = "(H, W, 3)" if shape_rank == 3 else "(T, H, W, 3)"
        raise ValueError(f"preview {what}: expected uint8 {want}, got {a.dtype} {a.shape}")
    return a


def _scale(frames: np.ndarray, height: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, height, W', 3), aspect kept; nearest up, antialiased down."""
    from PIL import Image

    t, h, w, _ = frames.shape
    if h == height:
        return frames
    width = max(1, round(w * height / h))
    method = Image.Resampling.NEAREST if height > h else Image.Resampling.LANCZOS
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), method)) for f in frames])


def _frame(clip: np.ndarray, t: int) -> np.ndarray:
    return clip[min(t, len(clip) - 1)]


@dataclass(frozen=True, kw_only=True)
class _Layout:
    """Where everything of a preview goes (pixels)."""
    cols: list          # the columns shown: 0 condition, 1 real (when any row has one), 2 generated
    xs: dict            # column -> left edge
    widths: dict        # column -> width
    height: int         # every picture's height
    line: int           # one line of text
    row_h: int          # one row: its label line, its pictures, a gap
    top: int            # the title and caption lines
    size: tuple         # (width, height) of the whole frame, both even

    def picture_y(self, row: int) -> int:
        return self.top + row * self.row_h + self.line


def compose(rows, title: str) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of the preview of ``rows`` (see ``write_preview``)."""
    from PIL import ImageFont

    if not rows:
        raise ValueError("preview: no rows")
    font = ImageFont.load_default()
    items = _scaled_items(rows)
    layout = _layout(items, font, title)
    canvas = _still_canvas(items, layout, font, title)
    frames = np.repeat(canvas[None], max(len(g) for *_, g in items), axis=0)
    for t, out in enumerate(frames):
        for i, (_, _, real, gen) in enumerate(items):
            y = layout.picture_y(i)
            for c, clip in ((1, real), (2, gen)):
                if clip is not None:
                    out[y:y + layout.height, layout.xs[c]:layout.xs[c] + clip.shape[2]] = _frame(clip, t)
    return frames


def _scaled_items(rows) -> list:
    """[(label, condition (1, H, W, 3), real clip or None, generated clip)], checked and scaled to one height:
    the tallest picture's, within MIN_HEIGHT..MAX_HEIGHT."""
    items = []
    for label, cond, real, gen in rows:
        cond = _check(cond, 3, f"{label} condition")[None]
        real = None if real is None else _check(real, 4, f"{label} real clip")
        items.append((str(label), cond, real, _check(gen, 4, f"{label} generated clip")))
    tallest = max(x.shape[1] for _, *clips in items for x in clips if x is not None)
    height = min(max(tallest, MIN_HEIGHT), MAX_HEIGHT)
    return [(label, *[None if x is None else _scale(x, height) for x in clips]) for label, *clips in items]


def _layout(items: list, font, title: str) -> _Layout:
    height = items[0][1].shape[1]
    cols = [0, 1, 2] if any(item[2] is not None for item in items) else [0, 2]
    widths = {c: max(item[1 + c].shape[2] for item in items if item[1 + c] is not None) for c in cols}
    xs, x = {}, GAP
    for c in cols:
        xs[c], x = x, x + widths[c] + GAP
    line = font.getbbox("Ag")[3] + 6
    width = max(x, font.getbbox(title)[2] + 2 * GAP)
    row_h = line + height + GAP
    top = 2 * line
    total = top + len(items) * row_h
    return _Layout(cols=cols, xs=xs, widths=widths, height=height, line=line, row_h=row_h, top=top,
                   size=(width + width % 2, total + total % 2))          # even sizes for the mp4's yuv420p


def _still_canvas(items: list, layout: _Layout, font, title: str) -> np.ndarray:
    """The parts that do not move: background, title, captions, labels, conditioning images, empty cells."""
    from PIL import Image, ImageDraw

    base = Image.new("RGB", layout.size, (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(base)
    draw.text((GAP, 3), title, fill=TEXT, font=font)
    for c in layout.cols:
        draw.text((layout.xs[c], layout.line + 3), CAPTIONS[c], fill=TEXT, font=font)
    for i, (label, *_) in enumerate(items):
        draw.text((GAP, layout.top + i * layout.row_h + 3), label, fill=TEXT, font=font)
    canvas = np.asarray(base).copy()
    h = layout.height
    for i, (_, cond, real, _) in enumerate(items):
        y = layout.picture_y(i)
        canvas[y:y + h, layout.xs[0]:layout.xs[0] + cond.shape[2]] = cond[0]
        if real is None and 1 in layout.cols:
            canvas[y:y + h, layout.xs[1]:layout.xs[1] + layout.widths[1]] = BACKGROUND + 16   # "no real clip"
    return canvas


def write_preview(path_stem, rows, fps: float, title: str) -> tuple[Path, Path]:
    """Write ``<path_stem>.gif`` and ``<path_stem>.mp4``; returns both paths.

    ``rows``: [(label, condition image uint8 (H, W, 3), real clip uint8 (T, H, W, 3) or None,
    generated clip uint8 (T, H, W, 3)), ...] (keep it to a few rows: the files stay small).
    ``title``: the header line, e.g. "svd:25 - mini world (not the paper's numbers)".
    """
    from sfv_core.data.videoio import gif_bytes, write_video

    frames = compose(rows, title)
    gif, mp4 = Path(f"{path_stem}.gif"), Path(f"{path_stem}.mp4")
    atomic_write_bytes(gif, gif_bytes(frames, fps))
    write_video(mp4, frames, fps)
    return gif, mp4
