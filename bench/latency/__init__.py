"""`sfv-bench latency`: time what Table 1's latency column means, on the real SVD architectures.

Modules: ``options`` (inference options, the options-applied UNet, the greedy search with its
precision check), ``models`` (shapes, models, inputs, FLOPs), ``loops`` (each method's own sampler
loop), ``benchmark`` (the measurements), ``report`` (JSON and Markdown), ``regress`` (the gate
between two results), ``command`` (``sfv-bench latency``). This package's ``__init__`` stays
torch-free (``regress`` needs only the schema).

What is measured (SF-V paper sec. 4.2; docs/reference.md#latency-column and #cost-floors):

* **UNet pass** -- one forward of the SVD UNet at batch 1 and batch 2 (CFG batches cond + uncond)
  on random inputs of the generation shape. ``paper``: 14 frames at 1024x576, i.e. a
  14x8x72x128 UNet input (4 noisy + 4 image-latent channels), and 25 frames for the 25-frame
  AnimateLCM* model; ``tiny``: the tiny test stack at 14 frames 64x64 (CPU tests).
* **Denoising process** of each method spec = all its UNet calls for one video (the Table 1
  latency). Calls come from the methods registry (``svd:N`` -> N batch-2 calls, ``animatelcm:N``
  -> N batch-1 calls at 25 frames, one-step family -> 1 batch-1 call). Reported twice:
  ``unet_ms_median`` = calls x median pass, and ``unet_loop_ms`` = the method's own sampler loop
  (``Method.sample``: scaling, CFG combination, scheduler updates and the UNet calls) timed as a
  whole, which checks the sum.
* **End to end** per method: image encoder (antialiased resize to 224, CLIP normalisation and
  ViT-H/14, on the device), VAE encode of the noise-augmented image, UNet loop, VAE decode of all
  generated frames in chunks of ``decode_chunk_size`` (recorded: it changes the output), total.
* **FLOPs** of every part, counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
  ``meta`` device (no memory, seconds on a CPU; full size: UNet 44.8 T at batch 1, VAE decode of
  14 frames 97.2 T, VAE encode 2.6 T, CLIP 0.33 T), and the achieved TFLOP/s of the UNet pass.
* **Peak memory**: ``torch.cuda.max_memory_allocated`` over each measurement (all models
  resident); on a CPU the process's peak RSS instead.

Models: the full-size configs with random weights (UNet 1.525 B parameters, temporal VAE 97.7 M,
CLIP ViT-H/14 632 M; timing does not depend on the values), or real weights from ``--stack``
(any stack spec of ``methods.stacks``). ``--shape tiny`` uses the tiny stack by default.

Clocks: on CUDA each repeat is bracketed by CUDA events after ``warmup`` untimed runs; on a CPU
``time.perf_counter`` (monotonic). Summaries: median, p10, p90 (linear interpolation), min, n.

Inference options (UNet; dtype and channels_last also apply to the VAE and CLIP): ``dtype``
(fp32 | fp16 | bf16), ``attention`` (SDPA backend: default | math | flash | efficient | cudnn),
``channels_last``, ``compile`` (``torch.compile``, mode ``default``; with CUDA graphs mode
``reduce-overhead``), ``cuda_graphs`` (eager: one ``torch.cuda.CUDAGraph`` per input shape).
Each option takes one value, a comma list, or ``auto`` (CUDA: dtype bf16,fp16,fp32;
channels_last, compile, cuda_graphs off,on; attention default. CPU: fp32, off, off, off).
Lists are searched greedily in the order dtype, attention, channels_last, compile, cuda_graphs:
for each option in turn every value is tried with the choices made so far, and the fastest
(median batch-1 pass) *eligible* value kept. Eligible = its batch-1 UNet output on the same
seeded inputs matches the fp32 eager output (TF32 off) within ``--tolerance`` relative L2 error
||y - y_ref|| / ||y_ref|| (default 0.02). Why 0.02: a bf16 pass of the full-size UNet
(random weights, measured on a CPU at a 14x8x16x16 input) is 1.46% off, fp16 0.57%; the tiny
UNet in bf16 1.56%: at 1e-2 bf16 would never qualify. The check runs with every benchmark (also
for fixed options) and is written to the JSON (``precision_check``).
"""

SCHEMA = "sfv-bench-latency/1"
DEFAULT_TOLERANCE = 0.02   # relative L2 vs fp32 eager; why 0.02: see above
