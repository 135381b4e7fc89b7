"""Batch prediction with exact geometry: every mask has its input's size, spacing, origin, direction and format.

Output layout in ``out_dir``:

- ``<name>``: one integer label volume per case in the training labels' encoding (``labels.json`` in the
  folder records it): index labels for exclusive classes, a bitmask (sum of the classes' bits) for
  overlapping multi-label classes. ``<name>`` is ``<case_id>`` + the input's extension for manifests and the
  input's own file name for ``--input`` (NIfTI for DICOM folders).
- ``probabilities/<case_id>_<class><ext>`` (with ``probabilities=True``): float32 per-class probabilities.
- ``failures.csv``: cases that could not be predicted and why (only when some failed).

A failed case never stops the batch; files are written atomically, only inside ``out_dir`` and never over an
input; cases already predicted (with their probability maps when ``probabilities``) are skipped unless
``overwrite``; temporary files a killed run left are removed when their case starts again. Under ``torchrun``
the cases are sharded over the processes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from seg25d.pipeline.atomic import full_suffix, remove_stale_temporaries, write_csv, write_json
from seg25d.pipeline.checkpoint import load_checkpoint, load_model
from seg25d.pipeline.device import describe_device, distributed_backend, resolve_device, resolve_precision
from seg25d.pipeline.provenance import command_line
from seg25d.pipeline.ensemble import Ensemble
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import image_paths, read_image
from seg25d.pipeline.io import write_mask, write_volume
from seg25d.pipeline.label_tables import write_label_tables
from seg25d.pipeline.manifest import LabelSpec, read_manifest
from seg25d.pipeline.outputs import check_out_dir, inside, make_out_dir, safe_name
from seg25d.pipeline.preprocess import Preprocessing
from seg25d.pipeline.volume_inference import predict_probabilities, probabilities_to_masks

__all__ = ["Predictor", "PredictionJob", "predict_batch", "jobs_from_manifest"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PredictionJob:
    case_id: str
    image: str
    name: str  # output file name
    channels: tuple[str, ...] = ()  # every channel file of a multi-modal case (image is the first)

    @property
    def paths(self) -> list[str]:
        return list(self.channels) or [self.image]


class Predictor:
    """A trained model with the preprocessing it was trained with, on ``device`` (``auto``: the GPU when CUDA is
    available) in ``precision`` (``None``: fp32 on the CPU, auto on CUDA); ``predict(volume)`` -> label volume."""

    def __init__(self, checkpoint: str | os.PathLike, device: str = "auto", precision: str | None = None):
        payload = load_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision or ("auto" if self.device.type == "cuda" else "fp32"),
                                           self.device)
        self.model = load_model(checkpoint, payload).to(self.device)
        self.spec = LabelSpec.from_dict(payload["task"])
        for name in self.spec.classes:  # they name the probability maps
            safe_name(name, checkpoint, "class name")
        self.sigmoid = bool(payload["sigmoid"])
        self.preprocessing = Preprocessing.from_dict(payload["preprocessing"])
        self.in_channels = int(payload["model_config"]["in_channels"])
        self.postprocessing = payload.get("postprocessing")  # the largest-component decision of training

    def probabilities(self, volume, tta: bool = False):
        """Per-class probabilities ``(K, D, H, W)`` on the volume's own grid."""
        image = self.preprocessing.image(volume.array, volume.meta.spacing)
        probs = predict_probabilities(self.model, image, self.sigmoid, tta=tta, precision=self.precision)
        return self.preprocessing.restore(probs, volume.meta.shape)

    def label(self, probabilities, threshold: float = 0.5):
        return self.spec.encode(probabilities_to_masks(probabilities, self.sigmoid, threshold))


def jobs_from_manifest(manifest, split: str | None = None) -> list[PredictionJob]:
    frame = read_manifest(manifest)
    if split:
        frame = frame[frame.split == split]
        if frame.empty:
            raise InputError(manifest, f"no cases in split {split!r}")
    jobs = []
    for row in frame.itertuples():
        ext = ".nii.gz" if Path(row.image).is_dir() else full_suffix(row.image).lower()
        paths = image_paths(row)
        jobs.append(PredictionJob(row.case_id, row.image, f"{row.case_id}{ext}", tuple(paths) if len(paths) > 1 else ()))
    return jobs


def _shard(jobs: list[PredictionJob], device: torch.device) -> tuple[list[PredictionJob], int, int]:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():  # NCCL between GPUs, gloo between CPU processes
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(distributed_backend(device))
    return jobs[rank::world], rank, world


def predict_batch(checkpoint, jobs: list[PredictionJob], out_dir, probabilities: bool = False, tta: bool = False,
                  overwrite: bool = False, progress: bool = True, largest_component=None, device: str = "auto",
                  precision: str | None = None) -> dict:
    """Predict every job on ``device`` in ``precision`` (see :class:`Predictor`); returns counts and the failures
    (also written to ``out_dir/failures.csv``).

    ``checkpoint``: one checkpoint or several (their probabilities are averaged); ``largest_component``: see
    :class:`~seg25d.pipeline.ensemble.Ensemble`."""
    out_dir = check_out_dir(out_dir)
    predictor = Ensemble(checkpoint, largest_component, device, precision)  # a refused checkpoint: no folder left
    make_out_dir(out_dir)
    inputs = {Path(path).resolve() for job in jobs for path in job.paths}
    mine, rank, world = _shard(jobs, predictor.device)
    if rank == 0:
        write_label_tables(out_dir, predictor.spec)
        write_json(out_dir / "prediction.json", {"checkpoint": str(Path(predictor.checkpoints[0]).resolve()),
                                                 "checkpoints": [str(Path(c).resolve()) for c in predictor.checkpoints],
                                                 "largest_component": predictor.largest_component, "tta": tta,
                                                 "device": describe_device(predictor.device),
                                                 "precision": predictor.precision,
                                                 "command": command_line()})
    failures, done, skipped = [], 0, 0
    start = time.perf_counter()
    bar = tqdm(mine, desc="predict", unit="vol", disable=not progress or rank != 0, dynamic_ncols=True)
    for job in bar:
        try:
            target = inside(out_dir, job.name)
            ext = full_suffix(job.name)
            maps = [inside(out_dir / "probabilities", f"{job.case_id}_{name}{ext}") for name in predictor.spec.classes]
            outputs = [target, *maps] if probabilities else [target]
            for path in outputs:
                if path.resolve() in inputs:
                    raise InputError(job.image, f"output {path} is an input of this batch; predict into another --out")
                if path.is_dir():
                    raise InputError(job.image, f"output {path} exists as a folder")
                remove_stale_temporaries(path)
            if all(path.exists() for path in outputs) and not overwrite:
                skipped += 1
                continue
            volume = read_image(job.paths)
            probs = predictor.probabilities(volume, tta=tta)
            if probabilities:
                for path, p in zip(maps, probs):
                    write_volume(path, p.astype("float32"), volume.meta)
            write_mask(target, predictor.label(probs), volume.meta)
            done += 1
        except InputError as err:
            failures.append({"case_id": job.case_id, "image": job.image, "reason": err.problem})
        except Exception as err:  # one bad case never stops the batch
            log.warning("case %s failed: %s: %s", job.case_id, type(err).__name__, err)
            log.debug("case %s failed", job.case_id, exc_info=True)
            failures.append({"case_id": job.case_id, "image": job.image, "reason": f"{type(err).__name__}: {err}"})
        minutes = (time.perf_counter() - start) / 60
        bar.set_postfix(vol_per_min=f"{done / max(minutes, 1e-9):.1f}", failed=len(failures), refresh=False)
    failures = _gather_failures(failures, world)
    path = out_dir / "failures.csv"
    if rank == 0:
        if failures:
            write_csv(path, pd.DataFrame(failures, columns=["case_id", "image", "reason"]))
        elif path.exists():
            path.unlink()
    return {"predicted": done, "skipped": skipped, "failed": len(failures), "failures": failures,
            "seconds": time.perf_counter() - start}


def _gather_failures(failures: list[dict], world: int) -> list[dict]:
    if world == 1:
        return failures
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, failures)
    return [f for part in gathered for f in part]
