"""The GPU check's payload: what a GPU machine receives for ``benchmarks/device_check.py`` -- the working tree
(tracked files and untracked files git does not ignore, as the repository stands) plus the carried wheels
(``.whl/*.whl``) -- against its limit (40 MiB).

    python3 benchmarks/devcheck_payload.py [--wheels .whl] [--limit-mib 40]

Prints the tree (and the mini world's part of it), each wheel and the total; exit 0 within the limit, 1 over.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINI = "methods/models/mini/"
MIB = 2**20


def tree_files(root: Path = ROOT) -> list[Path]:
    """Tracked files and untracked, not ignored ones (``git ls-files -co --exclude-standard``) that exist."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                         check=True).stdout.decode()
    return [root / name for name in sorted(set(out.split("\0"))) if name and (root / name).is_file()]


def payload(root: Path = ROOT, wheels: Path | None = None) -> dict:
    files = tree_files(root)
    sizes = {p.relative_to(root).as_posix(): p.lstat().st_size for p in files}
    wheel_dir = wheels if wheels is not None else root / ".whl"
    whl = {p.name: p.stat().st_size for p in sorted(wheel_dir.glob("*.whl"))} if wheel_dir.is_dir() else {}
    tree = sum(sizes.values())
    return {"tree_bytes": tree, "tree_files": len(sizes), "mini_bytes": sum(v for k, v in sizes.items()
                                                                            if k.startswith(MINI)),
            "wheels": whl, "wheels_bytes": sum(whl.values()), "total_bytes": tree + sum(whl.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", default=None, help="folder of the carried wheels (default: .whl in the repository)")
    p.add_argument("--limit-mib", type=float, default=40.0, help="the payload's limit in MiB (default 40)")
    args = p.parse_args(argv)
    r = payload(ROOT, Path(args.wheels) if args.wheels else None)
    print(f"tree:   {r['tree_bytes'] / MIB:6.2f} MiB in {r['tree_files']} files "
          f"(the mini world's weights, {MINI}: {r['mini_bytes'] / MIB:.2f} MiB)")
    for name, size in r["wheels"].items():
        print(f"wheel:  {size / MIB:6.2f} MiB {name}")
    if not r["wheels"]:
        print("wheels: none found (make them as device_check.py's docstring says: diffusers, pytorch_optimizer)")
    ok = r["total_bytes"] <= args.limit_mib * MIB
    print(f"payload: {r['total_bytes'] / MIB:.2f} MiB = {r['total_bytes']:,} bytes; limit {args.limit_mib:g} MiB: "
          f"{'within' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
