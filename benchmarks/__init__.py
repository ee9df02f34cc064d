"""Speed and scale benchmarks of the bundle against reference implementations (``python -m benchmarks``).

One module per area (see ``docs/performance.md``): :mod:`benchmarks.unet_overhead` (item 1),
:mod:`benchmarks.sampling` (items 2-3), :mod:`benchmarks.blur` (4), :mod:`benchmarks.training` (5),
:mod:`benchmarks.memory` (6), :mod:`benchmarks.scale_out` (7), :mod:`benchmarks.throughput` (8) and
:mod:`benchmarks.gpu` (the SD-1.5 figures that need a GPU). Timing helpers are in :mod:`benchmarks.common`.
"""
