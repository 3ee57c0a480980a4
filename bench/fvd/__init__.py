"""FVD: the I3D network (``i3d``), the detectors and their weight files (``detectors``), feature
statistics and the Fréchet distance (``stats``), batched features and the one real-statistics cache
(``features``), and ``sfv-bench fvd`` (``command``)."""
