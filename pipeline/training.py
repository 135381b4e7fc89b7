"""Training for every registered model: one loop, the paper's two-path schedule where a model has it, runs that
survive.

``train(config, out_dir)`` writes into ``out_dir``: ``config.json`` (resolved), ``last.pt`` (every
``train.checkpoint_every`` steps and at the end), ``best.pt`` (best mean validation Dice, or lowest training
loss without validation cases), ``metrics.csv`` (one row per step: path, losses, learning rate, the step's
seconds, total time; peak GPU memory on CUDA; validation Dice per class on validation steps), ``curves.png``
and ``run.json`` (the command lines: the first and every resume, the device and precision).
``train(..., resume=True)`` continues from ``last.pt``. How a model is fed, and whether it has the two paths,
is its :class:`~seg25d.models.feeding.Feeding`.

Reproducibility: each step's batch, augmentation and random views come from generators seeded by
``(seed, step, rank)``, and the optimiser and scheduler states are checkpointed, so a run killed at any point
and resumed ends with the weights of an uninterrupted run (CPU, same thread count). A ``max_minutes``
limit stops early and is not reproducible by nature; ``max_steps`` is.

Device and precision: ``train.device`` (``auto``: the GPU when CUDA is available, else the CPU) holds the model,
the operators and every batch; ``train.precision`` runs the forward pass under autocast as
:func:`~seg25d.pipeline.device.resolve_precision` decides (bf16 on GPUs that support it, else fp16 with a
gradient scaler; bf16 on CPUs that compute it natively); weights, optimiser and losses stay fp32; validation
runs in fp32. ``train.deterministic`` turns on deterministic algorithms (bit-identical CUDA reruns, slower).

Data parallel: under ``torchrun --nproc_per_node=N`` each rank draws its own batch (rank in the seed),
gradients are averaged with DistributedDataParallel (NCCL between GPUs, each rank on ``cuda:LOCAL_RANK``;
gloo between CPU processes), and only rank 0 writes.

Callbacks (:class:`TrainerCallback`) see every step and validation; the benchmarks install theirs (turns on
a shared machine, each step's peak memory) this way, and plain training runs none.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from seg25d.models import build, feeding_of, model_options
from seg25d.models.projection25d import resolve_scale
from seg25d.pipeline.atomic import write_csv, write_json
from seg25d.pipeline.cache import resolve_cache_dir
from seg25d.pipeline.callbacks import TrainerCallback
from seg25d.pipeline.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from seg25d.pipeline.device import (
    autocast, describe_device, distributed_backend, grad_scaler, local_device_for_rank, peak_memory,
    peak_memory_reset, resolve_device, resolve_precision, set_deterministic, synchronize, to_device,
)
from seg25d.pipeline.data import BatchSampler, split_manifest, step_generator, task_for
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.loader import BatchLoader, resolve_workers
from seg25d.pipeline.losses import segmentation_loss
from seg25d.pipeline.metrics import dice_per_class
from seg25d.pipeline.planning import planned_config, prepare_training_data
from seg25d.pipeline.postprocess import record_postprocessing
from seg25d.pipeline.provenance import run_commands
from seg25d.pipeline.volume_inference import predict_probabilities, probabilities_to_masks

__all__ = ["train", "TrainResult", "TrainerCallback", "SCHEDULES"]

log = logging.getLogger(__name__)
SCHEDULES = ("path1", "path1_then_path2", "alternate")


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_score: float | None  # best mean validation Dice (None without validation cases)
    last_checkpoint: Path
    best_checkpoint: Path | None
    stopped_by_time: bool

    @property
    def validated(self) -> bool:
        return self.best_score is not None


class _Distributed:
    """The torchrun processes of a run on ``device``: one GPU each (NCCL), or CPU processes (gloo)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        self.device = device
        if self.enabled and device.type == "cuda":
            own = local_device_for_rank()
            if device != own:
                raise InputError("train.device", f"under torchrun each process trains on its own GPU ({own} here), "
                                                 f"not {device}; use auto or cuda")
            torch.cuda.set_device(device)
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(distributed_backend(device))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)  # NCCL reduces CUDA tensors only
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)

    def average_gradients(self, params):
        if self.enabled:
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world


def _lr_factor(kind: str, warmup: int, step: int, progress: float) -> float:
    """Warm-up over ``warmup`` steps, then constant or cosine decay (to 2%) over the run's progress."""
    if kind not in ("cosine", "constant"):
        raise InputError("train.scheduler", f"must be 'cosine' or 'constant', got {kind!r}")
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _load_data(config: dict, main: bool):
    manifest = config["data"]["manifest"]
    if not manifest:
        raise InputError("data.manifest", "no manifest given; e.g. --set data.manifest=DIR/manifest.csv "
                                          "(seg25d synth vessels --out DIR makes one)")
    task = task_for(manifest)
    train_rows, val_rows = split_manifest(manifest, config["data"], seed=int(config["train"]["seed"]))
    prep, plan, train_cases, val_cases = prepare_training_data(config, task, train_rows, val_rows,
                                                               progress=main and config["train"]["progress"],
                                                               cache=resolve_cache_dir(config["data"]["cache"]))
    if main:
        log.info("%s", plan.summary())
    return task, prep, plan, train_cases, val_cases


def _ema_model(model: torch.nn.Module, decay) -> AveragedModel | None:
    """``train.ema``: an exponential moving average of the weights (and normalisation statistics), or None."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise InputError("train.ema", f"must be a decay in [0, 1) (0: off), got {decay!r}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True) if decay else None


class _Trainer:
    def __init__(self, config: dict, out_dir: Path, resume: bool, callbacks=()):
        self.config, self.out_dir = config, Path(out_dir)
        self.callbacks = list(callbacks)
        tc = config["train"]
        self.device = resolve_device(tc["device"])
        self.dist = _Distributed(self.device)
        threads = int(tc["threads"]) or (max(1, (os.cpu_count() or 1) // self.dist.world) if self.dist.enabled else 0)
        if threads:
            torch.set_num_threads(threads)
        self.seed = int(tc["seed"])
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        if tc["schedule"] not in SCHEDULES:
            raise InputError("train.schedule", f"must be one of {SCHEDULES}, got {tc['schedule']!r}")
        self.precision = resolve_precision(tc["precision"], self.device)
        set_deterministic(bool(tc["deterministic"]))
        if self.dist.main:
            print(f"device: {describe_device(self.device)}, precision {self.precision}", flush=True)
        self.task, self.prep, self.plan, self.train_cases, self.val_cases = _load_data(config, self.dist.main)
        if tc["val_max_cases"]:
            self.val_cases = self.val_cases[: int(tc["val_max_cases"])]
        mc = config["model"]
        in_channels = self.train_cases[0].image.shape[0]
        options = dict(mc["options"])
        if "spacing" in model_options(mc["name"]) and options.get("spacing") is None:  # views in mm
            spacing = self.plan.spacing or np.median([c.meta.spacing for c in self.train_cases], axis=0)
            options["spacing"] = [float(v) for v in spacing]
        if options.get("scale") == "auto":  # projection25d: the working grid decides (largest training volume)
            largest = max(self.train_cases, key=lambda c: c.image[0].size).image.shape[1:]
            options["scale"] = resolve_scale("auto", largest)
        try:
            self.model = build(mc["name"], in_channels, self.task.out_channels, **options)
        except ValueError as err:
            raise InputError("model", str(err)) from None
        self.model.to(self.device)  # before the optimiser and the resume: their states follow the parameters
        self.ema = _ema_model(self.model, tc["ema"])
        self.feeding = feeding_of(self.model)
        if self.feeding.padding == "valid":
            raise InputError("model.options.padding", "valid convolutions give outputs smaller than the labels; "
                                                      "train with padding='same' (valid nets are for overlap-tile "
                                                      "inference)")
        lc = config["loss"]
        if self.task.sigmoid and lc["kind"] == "ce_dice" or not self.task.sigmoid and lc["kind"] == "bce_dice":
            outputs, need = (("multi-label/binary sigmoid", "bce_dice or dice") if self.task.sigmoid
                             else ("exclusive softmax", "ce_dice or dice"))
            raise InputError("loss.kind", f"{lc['kind']} does not fit {outputs} outputs of classes "
                                          f"{', '.join(self.task.classes)}; use {need}")
        self.sampler = BatchSampler(self.train_cases, self.feeding, planned_config(config, self.plan))
        self.two_paths = self.feeding.two_paths
        self.step, self.best, self.elapsed, self.path2_started = 0, -math.inf, 0.0, False
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(tc["lr"]),
                                           weight_decay=float(tc["weight_decay"]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(tc["scheduler"], int(tc["warmup_steps"]), step, self.progress()))
        self.scaler = grad_scaler(self.device, self.precision)
        self.rows: list[dict] = []
        self.feature_cache: dict[str, tuple] = {}
        if resume:
            self._resume()
        elif self.dist.main and (self.out_dir / "last.pt").exists():
            raise InputError(self.out_dir, "holds a run already (last.pt); use --resume to continue or another --out")
        self.ddp = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled else None)

    # --- state ----------------------------------------------------------------------------------------------
    def _payload(self) -> dict:
        predicting = self.model if self.ema is None else self.ema.module
        return {
            "model_config": self.model.config, "model_state": predicting.state_dict(),
            **({} if self.ema is None else {"training_state": self.model.state_dict(),
                                            "ema_updates": int(self.ema.n_averaged)}),
            "optimizer_state": self.optimizer.state_dict(), "scheduler_state": self.scheduler.state_dict(),
            "step": self.step, "best_score": self.best, "elapsed_seconds": self.elapsed,
            "path2_started": self.path2_started, "config": self.config, "task": self.task.spec.to_dict(),
            "classes": list(self.task.classes), "sigmoid": self.task.sigmoid,
            "preprocessing": self.prep.to_dict(), "plan": self.plan.to_dict(), "rng": rng_state(),
            "scaler_state": self.scaler.state_dict(),
        }

    def _resume(self):
        path = self.out_dir / "last.pt"
        state = load_checkpoint(path)
        if state["model_config"]["name"] != self.model.config["name"]:
            raise InputError(path, f"holds a {state['model_config']['name']} run, config asks for "
                                   f"{self.model.config['name']}")
        changed = [f"{section}.{key}" for section in ("data", "model", "loss")
                   for key in set(self.config[section]) | set(state["config"][section])
                   if self.config[section].get(key) != state["config"][section].get(key)
                   and (section, key) not in (("data", "manifest"), ("data", "cache"))]  # moved data may resume
        if changed:
            raise InputError(path, f"was trained with other settings ({', '.join(sorted(changed))}); resume with "
                                   "the same data, model and loss (train.* and augment.* may change)")
        self.model.load_state_dict(state.get("training_state", state["model_state"]))
        if self.ema is not None and "training_state" in state:  # else the average starts afresh
            self.ema.module.load_state_dict(state["model_state"])
            self.ema.n_averaged.fill_(int(state["ema_updates"]))
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        if state.get("scaler_state"):
            self.scaler.load_state_dict(state["scaler_state"])
        self.step, self.best = int(state["step"]), float(state["best_score"])
        self.elapsed = float(state["elapsed_seconds"])
        self.path2_started = bool(state["path2_started"])
        set_rng_state(state["rng"])
        if self.path2_started:
            self.model.freeze_unet(True)
        metrics = self.out_dir / "metrics.csv"
        if metrics.exists():
            frame = pd.read_csv(metrics)
            self.rows = frame[frame.step < self.step].to_dict("records")
        log.info("resumed %s at step %d", self.out_dir, self.step)

    def _save(self, name: str):
        if self.dist.main:
            save_checkpoint(self.out_dir / name, self._payload())

    # --- the schedule ---------------------------------------------------------------------------------------
    def progress(self) -> float:
        """Share of the run done: by steps, or by ``max_minutes`` when that limit comes first (the learning-rate
        decay then follows the clock, so time-limited runs still anneal; only step-limited runs are exactly
        reproducible)."""
        tc = self.config["train"]
        by_steps = self.step / max(1, int(tc["max_steps"]))
        limit = float(tc["max_minutes"]) * 60
        return max(by_steps, self.elapsed / limit) if limit else by_steps

    def _path(self) -> int:
        """1 or 2 for models with the paper's two paths, 0 for other models."""
        if not self.two_paths:
            return 0
        tc = self.config["train"]
        if tc["schedule"] == "alternate":
            return 2 if (self.step + 1) % int(tc["alternate_every"]) == 0 else 1
        if tc["schedule"] == "path1_then_path2" and not self.path2_started:
            frac = float(tc["path2_fraction"])
            by_steps = self.step >= math.ceil(int(tc["max_steps"]) * (1 - frac))
            limit = float(tc["max_minutes"]) * 60
            by_time = bool(limit) and self.elapsed >= limit * (1 - frac)
            if frac > 0 and self.dist.any(by_steps or by_time):
                self.path2_started = True
        return 2 if self.path2_started else 1

    # --- one step -------------------------------------------------------------------------------------------
    def _loss(self, logits, masks):
        lc = self.config["loss"]
        if isinstance(logits, (list, tuple)):  # deep supervision
            return sum(self._loss(l, masks) for l in logits) / len(logits)
        return segmentation_loss(logits.float(), masks, self.task.sigmoid, lc["kind"], float(lc["ce_weight"]),
                                 float(lc["dice_weight"]))

    def _aux_loss(self, view_logits, masks, views):
        targets = self.model.project_labels(masks, views)
        k = masks.shape[1]
        lc = self.config["loss"]
        kind = "bce_dice" if lc["kind"] != "dice" else "dice"
        return segmentation_loss(view_logits[:, -k:].float(), targets, True, kind, float(lc["ce_weight"]),
                                 float(lc["dice_weight"]))

    def _path2_features(self, index: int):
        case = self.train_cases[index]
        if case.case_id not in self.feature_cache:
            x = to_device(torch.from_numpy(case.image)[None], self.device)
            with torch.no_grad():
                self.feature_cache[case.case_id] = self.model.encode(x, self.model.inference_views())
        return self.feature_cache[case.case_id]

    def _train_step(self, path: int) -> dict:
        generator = step_generator(self.seed, self.step, self.dist.rank)
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device="cpu")))  # host-side draws
        self.model.train()
        row = {"step": self.step, "path": path}
        with autocast(self.device, self.precision):
            loss, main, aux = self._forward(path, generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if path == 2 and self.dist.enabled:
            self.dist.average_gradients(self.model.parameters())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        row.update(loss=loss.item(), loss_main=main.item(), loss_aux=aux.item() if aux is not None else np.nan,
                   lr=self.optimizer.param_groups[0]["lr"], data_seconds=round(self.batches.data_seconds, 4)
                   if path != 2 else 0.0)
        self.scheduler.step()
        return row

    def _forward(self, path: int, generator: torch.Generator) -> tuple:
        """The step's losses ``(total, main, auxiliary or None)``."""
        if path == 2:
            if not self.model.unet_frozen:
                self.model.freeze_unet(True)
            index = int(torch.randint(len(self.train_cases), (1,), generator=generator, device="cpu"))
            case = self.train_cases[index]
            encoded = self._path2_features(index)
            x = to_device(torch.from_numpy(case.image)[None], self.device)
            logits = self.model.decode(x, encoded)
            loss = main = self._loss(logits, to_device(torch.from_numpy(case.masks)[None].float(), self.device))
            aux = None
        else:
            if self.two_paths and self.model.unet_frozen:
                self.model.freeze_unet(False)
                self.feature_cache.clear()  # the U-Net trains again: cached path-2 features go stale
            x, y = to_device(self.batches.batch(self.step), self.device)  # made ahead by the loader
            y = y.float()  # masks travel as bool
            net = self.ddp or self.model
            aux = None
            if self.two_paths and self.model.aux_loss:
                logits, (view_logits, views) = net(x, return_views=True)
                main = self._loss(logits, y)
                aux = self._aux_loss(view_logits, y, views)
                loss = main + float(self.config["loss"]["aux_weight"]) * aux
            else:
                loss = main = self._loss(net(x), y)
        return loss, main, aux

    # --- validation -----------------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Mean validation Dice per class of the weights that predict (the average with ``train.ema``, whose
        training weights' mean Dice is ``val_dice_mean_raw``)."""
        if not self.val_cases:
            return {}
        mean = self._val_dice(self.model if self.ema is None else self.ema.module)
        out = {f"val_dice_{name}": float(v) for name, v in zip(self.task.classes, mean)}
        out["val_dice_mean"] = float(mean.mean())
        if self.ema is not None:
            out["val_dice_mean_raw"] = float(self._val_dice(self.model).mean())
        return out

    def _val_dice(self, model) -> np.ndarray:
        scores = []
        for case in self.val_cases:
            probs = predict_probabilities(model, case.image, self.task.sigmoid)
            scores.append(dice_per_class(probabilities_to_masks(probs, self.task.sigmoid), case.masks))
        return np.mean(scores, axis=0)

    # --- outputs --------------------------------------------------------------------------------------------
    def _write_logs(self):
        if not self.dist.main or not self.rows:
            return
        write_csv(self.out_dir / "metrics.csv", pd.DataFrame(self.rows))
        try:
            from seg25d.pipeline.figures import training_curves

            training_curves(pd.DataFrame(self.rows), self.out_dir / "curves.png")
        except Exception as err:  # figures never break a run
            log.warning("could not draw training curves: %s", err)

    def run(self) -> TrainResult:
        tc = self.config["train"]
        max_steps, limit = int(tc["max_steps"]), float(tc["max_minutes"]) * 60
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", self.config)
            write_json(self.out_dir / "plan.json", self.plan.to_dict())
            write_json(self.out_dir / "run.json", {"commands": run_commands(self.out_dir / "run.json", self.step > 0),
                                                   "resumed_at_step": self.step,
                                                   "device": describe_device(self.device),
                                                   "precision": self.precision,
                                                   "world_size": self.dist.world})
        stopped_by_time = False
        bar = tqdm(total=max_steps, initial=self.step, desc=f"train {self.model.config['name']}", unit="step",
                   disable=not (self.dist.main and tc["progress"]), dynamic_ncols=True)
        checkpoint_every, val_every = int(tc["checkpoint_every"]), int(tc["val_every"])
        self.batches = BatchLoader(self.sampler, self.seed, self.dist.rank, self.step, max_steps,
                                   resolve_workers(tc["workers"], self.dist.world))
        while self.step < max_steps:
            if self.dist.any(bool(limit) and self.elapsed >= limit):  # a resumed run whose time is up
                stopped_by_time = True
                break
            for callback in self.callbacks:
                callback.before_step(self)
            peak_memory_reset(self.device)
            start = time.perf_counter()
            path = self._path()
            row = self._train_step(path)
            synchronize(self.device)  # CUDA kernels run asynchronously: the step ends when they do
            self.step += 1
            step_seconds = time.perf_counter() - start
            self.elapsed += step_seconds
            row.update(step_seconds=round(step_seconds, 4), seconds=round(self.elapsed, 3))
            if self.device.type == "cuda":
                row["peak_gpu_mb"] = round(peak_memory(self.device), 1)
            for callback in self.callbacks:
                callback.after_step(self, row)
            out_of_time = self.dist.any(bool(limit) and self.elapsed >= limit)
            last = self.step >= max_steps or out_of_time
            if self.dist.main and (self.step % val_every == 0 or last):
                scores = self.validate()
                row.update(scores)
                for callback in self.callbacks:
                    callback.after_validation(self, scores)
                score = scores.get("val_dice_mean", -row["loss"])
                if score > self.best:
                    self.best = score
                    self._save("best.pt")
            self.rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", path=path or "-", refresh=False)
            if self.step % checkpoint_every == 0 or last:
                # logs first: a run killed in between resumes from the older last.pt and drops the extra rows
                self._write_logs()
                self._save("last.pt")
            self.dist.barrier()
            if out_of_time:
                stopped_by_time = self.step < max_steps
                break
        bar.close()
        self.batches.close()
        if self.dist.main and self.val_cases:  # --largest-component auto: where it raises validation Dice
            record_postprocessing(self.out_dir, self.val_cases, self.task, self.device)
        best = self.out_dir / "best.pt"
        return TrainResult(self.out_dir, self.step, self.best if self.val_cases else None, self.out_dir / "last.pt",
                           best if best.exists() else None, stopped_by_time)


def train(config: dict, out_dir: str | os.PathLike, resume: bool = False,
          callbacks: list[TrainerCallback] | tuple = ()) -> TrainResult:
    """Train the configured model into ``out_dir`` (see the module docstring), calling ``callbacks`` around
    every step and validation."""
    return _Trainer(config, Path(out_dir), resume, callbacks).run()
