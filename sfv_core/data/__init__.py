"""Videos and datasets: container/array I/O, frame geometry, UCF-101's layout and split lists, the
real-clip rule shared by evaluation and training, and the synthetic dataset. Imports only sfv_core."""
