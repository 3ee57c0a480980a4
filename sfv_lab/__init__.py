"""Experiments above training: the mini world's build (``mini``: `sfv-bench build-mini`), its distillations and
the paper's Tables 2 and 3 in miniature (``distill``: `sfv-bench ablations`), and the controlled distillation
study (``study``: `sfv-bench study`).

They train through the training API (``sfv_train.train.train`` with a ``TrainConfig``; the world being built
is its ``mini_world`` field) and score with the harness (``bench.run``), so this package sits on the top floor,
above ``bench``. The `sfv-bench` command line (``bench.cli``) reaches these commands lazily, by the
"module:function" strings of its parsers (``bench.assets``), and imports nothing from here."""
