"""Datasets in the layouts people already have, imported as a seg25d manifest (``seg25d dataset import``).

Each reader turns a layout into a :class:`~seg25d.pipeline.datasets.layout.Layout` (cases, classes, channel
names); :func:`~seg25d.pipeline.datasets.layout.write_import` checks every file and writes the manifest, its
class sidecar and the seeded cross-validation folds.
"""

from seg25d.pipeline.datasets.folder import read_folder
from seg25d.pipeline.datasets.layout import Layout, SourceCase, write_import
from seg25d.pipeline.datasets.msd import read_msd
from seg25d.pipeline.datasets.nnunet import read_nnunet

__all__ = ["Layout", "SourceCase", "write_import", "read_nnunet", "read_msd", "read_folder"]
