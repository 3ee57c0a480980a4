"""FVD, below training: the I3D network (``i3d``), the seeded toy I3D (``toy``), the detectors and their
weight files (``detectors``), feature statistics and the Fréchet distance (``stats``), batched features and
the one real-statistics cache (``features``). The benchmark (``bench``), training's FVD
(``sfv_train.evaluation``) and the mini detector's trainer (``sfv_train.classifier``) all use this package;
``sfv-bench fvd`` is ``bench.fvd_command``."""
