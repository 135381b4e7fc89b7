"""seg25d: volumetric segmentation without 3D convolutions.

Subpackages, one job each:

- ``seg25d.projections``: geometry and projectors (MIP, Radon) from many directions.
- ``seg25d.reconstruction``: lifting back to 3D (backprojection, filtration, fine-tuning).
- ``seg25d.models``: the networks, reachable by name through ``seg25d.models.build``.
- ``seg25d.pipeline``: data, training, inference, evaluation and the ``seg25d`` command.
"""

__version__ = "0.1.0"
