"""Full-size smoke on CPU: the real SVD configuration with random weights, in two parts.

    nice -n 10 python benchmarks/full_size_smoke.py train --write results/full_size_smoke/train.md
    nice -n 10 python benchmarks/full_size_smoke.py generate --write results/full_size_smoke/generate.md
    python benchmarks/full_size_smoke.py train --parts meta            # seconds, allocates nothing

* ``train`` (``full_size_smoke_train.py``): two steps of every trainer (sfv, ufogen, ladd, lcm) through
  `sfv-train`'s command line at a small latent, a checkpoint, a resume, the export reloaded and one video
  generated from it.
* ``generate`` (``full_size_smoke_generate.py``): every method generates one video through `sfv-bench
  run`'s adapters and ``bench.generate.generate_method``, in float32 and bfloat16.

Each part prints wall seconds and peak RSS; its options: ``full_size_smoke.py train --help``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = {"train": "full_size_smoke_train", "generate": "full_size_smoke_generate"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in PARTS:
        print(f"usage: full_size_smoke.py {{{','.join(PARTS)}}} [OPTIONS]  (the part's --help lists them)",
              file=sys.stderr)
        return 2
    module = __import__(PARTS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
