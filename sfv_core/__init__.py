"""The ground floor of sfv-bench: primitives every other package shares.

It imports nothing else of the project. ``errors`` (UserError), ``fsutil`` (atomic writes,
hashes, the cache folder), ``env`` (device, dtype, git commit, versions), ``seeds`` (the one
per-video seed), ``protocol`` (the evaluation protocol and the generation defaults), ``paper``
(the SF-V paper's numbers) and ``data`` (videos, the UCF-101 layout, the synthetic dataset).
"""
