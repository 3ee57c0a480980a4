"""`python -m bench ...` = `sfv-bench ...` (what `torchrun --nproc_per_node K -m bench run ...` starts)."""
import sys

from .cli import main

sys.exit(main())
