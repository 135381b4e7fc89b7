"""Networks, reachable by name: ``build(name, in_channels, out_channels, **options)``.

Registered: ``unet2d``, ``unet3d`` (:mod:`.unet`), ``segnet`` (:mod:`.segnet`), ``unetpp`` (:mod:`.unetpp`),
``slicestack25d`` (:mod:`.slicestack`), ``projection25d`` (:mod:`.projection25d`), and ``monai_unet``
(:mod:`.monai_unet`, MONAI's 3D UNet as a benchmark peer; needs monai). Every model outputs logits and
declares how it is fed (:mod:`.feeding`).
"""

from seg25d.models.feeding import Feeding, feeding_of
from seg25d.models.registry import build, list_models, model_options, register_model

# Importing the architecture modules registers them.
from seg25d.models import unet, segnet, unetpp, slicestack, projection25d, monai_unet  # noqa: E402,F401  isort: skip

__all__ = ["build", "list_models", "model_options", "register_model", "Feeding", "feeding_of"]
