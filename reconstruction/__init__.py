"""Lifting 2D results back to 3D: backprojection (the Radon adjoint), MIP lifting, filtration F, fine-tuning T."""

from seg25d.reconstruction.backprojection import backproject, lift_mip
from seg25d.reconstruction.filtration import Filtration, ramp_kernel
from seg25d.reconstruction.finetune import FineTuning, local_mean

__all__ = ["backproject", "lift_mip", "Filtration", "ramp_kernel", "FineTuning", "local_mean"]
