"""`sfv-bench build-mini OUT`: the whole build (``sfv_lab.mini``), or new rows in the shipped world
(``sfv_lab.ship``: ``--redistil``, ``--ship-rows``)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from sfv_core.errors import UserError

from .mini import build_mini
from .ship import redistil, ship_rows

log = logging.getLogger(__name__)


def cli_build_mini(args) -> int:
    """``sfv-bench build-mini OUT``: every stage of sfv_lab.mini, then (``--install``) ship it."""
    if args.scale <= 0 or args.threads < 0:
        raise UserError("--scale must be > 0 and --threads >= 0")
    t0 = time.time()
    if getattr(args, "ship_rows", None):
        world = ship_rows(Path(args.out), [Path(f) for f in args.ship_rows.split(",")], args.install)
        log.info(f"shipped the chosen rows into {world}")
        return 0
    if getattr(args, "redistil", None):
        world = redistil(Path(args.out), args.redistil.split(","), device=args.device, threads=args.threads,
                         resume=args.resume, install_to_repo=args.install, progress=args.progress)
        log.info(f"re-distilled {args.redistil} into {world} ({(time.time() - t0) / 60:.1f} min this call)")
        return 0
    world = build_mini(Path(args.out), device=args.device, threads=args.threads, scale=args.scale,
                       resume=args.resume, install_to_repo=args.install, progress=args.progress)
    log.info(f"mini world built in {world} ({(time.time() - t0) / 60:.1f} min this call; per-stage times in "
          f"{Path(args.out) / 'build.json'})")
    return 0
