"""The UW-Madison GI Tract workflow: cross-validated training, submissions, the cross-validation table.

``seg25d kaggle train`` (:func:`train_folds`) imports the train split once into ``RUN_DIR/data``, trains
each fold into ``RUN_DIR/fold{k}`` (case-level GroupKFold from ``data.folds``), then predicts the fold's
held-out case-days from the PNGs with the fold's ``best.pt`` and scores them with the competition metric:
``val_submission.csv``, ``val_truth.csv`` and ``fold_score.json`` beside the checkpoints. A root with a
single case (or ``data.folds = 0``) trains one model on everything into ``RUN_DIR/full``.

``seg25d kaggle submit`` (:func:`submit`) averages the per-class probabilities of one or more checkpoints
on each case-day's own grid, thresholds them, drops small 2D components and writes ``id,class,predicted``.

``seg25d kaggle cv`` (:func:`collect_cv`) gathers the folds' scores into ``cv.json`` and ``cv.csv``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from seg25d.pipeline.atomic import write_csv, write_json
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.outputs import check_out_dir
from seg25d.pipeline.kaggle.layout import (
    CLASSES,
    CaseDay,
    import_kaggle,
    load_case_day,
    parse_slice_id,
    read_train_csv,
    scan_case_days,
)
from seg25d.pipeline.kaggle.rle import rle_encode

__all__ = [
    "SUBMISSION_COLUMNS",
    "FoldResult",
    "SubmitResult",
    "Ensemble",
    "read_exclude_file",
    "import_once",
    "build_fold_config",
    "train_folds",
    "remove_small_components",
    "predict_case_days",
    "read_sample_submission",
    "submit",
    "collect_cv",
    "format_cv_table",
]

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS = ("id", "class", "predicted")
_EXCLUDE_ENTRY = re.compile(r"case\d+(?:_day\d+)?")
_FOLD_DIR = re.compile(r"fold(\d+)")
_SET_BY_WORKFLOW = {"data.manifest": "it is RUN_DIR/data/manifest.csv",
                    "data.fold": "use --fold to choose the fold"}


# --- training ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FoldResult:
    """One trained fold (``fold`` None for the single run on all cases, in ``RUN_DIR/full``).

    ``score`` is the ``fold_score.json`` content, or None when there were no held-out case-days
    (``message`` says why).
    """

    fold: int | None
    out_dir: Path
    checkpoint: Path
    steps: int
    train_case_days: list[str]
    val_case_days: list[str]
    score: dict | None
    message: str = ""


def read_exclude_file(path: str | os.PathLike) -> list[str]:
    """Read case-day (``case7_day0``) or case (``case7``) ids, one per line; ``#`` starts a comment.

    Returns:
        The ids in file order, without repeats.

    Raises:
        InputError: the file is missing, or a line holds something else (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "exclude file not found")
    entries: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if _EXCLUDE_ENTRY.fullmatch(text) is None:
            raise InputError(f"{path}, line {number}", f"{text!r} is neither a case id (case7) nor a case-day id "
                                                       f"(case7_day0); one id per line, # for comments")
        entries.append(text)
    return list(dict.fromkeys(entries))


def import_once(root: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Import ``root``'s train split into ``data_dir`` unless a matching import is already there.

    Returns:
        The manifest path.

    Raises:
        InputError: no ``train.csv`` (training needs labels), or ``data_dir`` holds an import of other
            case-days.
    """
    from seg25d.pipeline.manifest import read_manifest

    root, data_dir = Path(root), Path(data_dir)
    if not (root / "train.csv").is_file():
        raise InputError(root / "train.csv", "not found: training needs the labels of the train split")
    manifest = data_dir / "manifest.csv"
    if not manifest.is_file():  # import_kaggle writes the manifest last: present means complete
        return import_kaggle(root, data_dir, split="train")
    expected = {c.name for c in scan_case_days(root, "train")}
    found = set(read_manifest(manifest).case_id)
    if found != expected:
        differ = sorted(found ^ expected)
        raise InputError(data_dir, f"holds an import of other case-days than {root / 'train'} ({len(differ)} differ, "
                                   f"e.g. {differ[0]}); use another --out or delete {data_dir}")
    log.info("reusing the import in %s", data_dir)
    return manifest


def build_fold_config(config: str | os.PathLike, overrides: Sequence[str], manifest: str | os.PathLike,
                      folds: int, exclude: Sequence[str] = (), seed: int = 0) -> dict:
    """The training config of every fold: the preset or file, the workflow's keys, then ``overrides``.

    Sets ``data.manifest``, ``data.folds``, ``data.exclude`` (joined with any ``data.exclude`` override) and
    ``train.seed``; ``--set`` overrides win, except ``data.manifest`` and ``data.fold``, which are errors.
    """
    from seg25d.pipeline.config import load_config, parse_override

    keys = set()
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key in _SET_BY_WORKFLOW:
            raise InputError("--set", f"{key} is set by kaggle train ({_SET_BY_WORKFLOW[key]})")
        keys.add(key)
    resolved = load_config(config, overrides)  # the same rules as seg25d train (e.g. a new model.name)
    resolved["data"]["manifest"] = str(manifest)
    if "data.folds" not in keys:
        resolved["data"]["folds"] = int(folds)
    if "train.seed" not in keys:
        resolved["train"]["seed"] = int(seed)
    resolved["data"]["exclude"] = list(dict.fromkeys([*exclude, *(resolved["data"]["exclude"] or [])]))
    return resolved


def train_folds(root: str | os.PathLike, run_dir: str | os.PathLike, config: str | os.PathLike = "gi",
                overrides: Sequence[str] = (), folds: int = 5, fold: int | None = None,
                exclude_file: str | os.PathLike | None = None, seed: int = 0, resume: bool = False,
                report=print) -> list[FoldResult]:
    """``seg25d kaggle train``: import once, then train and score fold ``fold`` or every fold in turn.

    Args:
        root: the dataset root (``train.csv``, ``train/``).
        run_dir: the run folder: ``data/`` (the import), ``fold{k}/`` (or ``full/``), ``workflow.json``.
        config: preset name or TOML file (default ``gi``).
        overrides: ``key=value`` config overrides (``--set``), applied last.
        folds: case-level cross-validation folds; 0 trains one model on every case (``RUN_DIR/full``).
            A root with a single case falls back to 0.
        fold: the fold to train; None trains 0..folds-1.
        exclude_file: case-day or case ids to leave out (see :func:`read_exclude_file`).
        seed: ``train.seed`` (it also shuffles the fold assignment).
        resume: continue a fold from its ``last.pt`` (folds without one start afresh).
        report: called with one line of text per event worth telling the user.

    Returns:
        One :class:`FoldResult` per trained fold.

    Raises:
        InputError: bad fold numbers, too few cases for the folds, and the errors of import and training.
    """
    from seg25d.pipeline.manifest import read_manifest

    root, run_dir = Path(root), check_out_dir(run_dir)
    exclude = read_exclude_file(exclude_file) if exclude_file is not None else []
    # the config first: a bad --set fails before the import's minutes
    cfg = build_fold_config(config, overrides, run_dir / "data" / "manifest.csv", folds, exclude, seed)
    manifest = import_once(root, run_dir / "data")
    n_folds = int(cfg["data"]["folds"])
    if n_folds < 0 or n_folds == 1:
        raise InputError("--folds", f"must be 0 (no cross-validation) or at least 2, got {n_folds}")

    frame = read_manifest(manifest)
    excluded = set(cfg["data"]["exclude"])
    unknown = sorted(excluded - set(frame.case_id) - set(frame.group))
    if unknown:
        report(f"note: excluded id(s) not in {root / 'train'}: {', '.join(unknown)}")
    kept = frame[frame.label.notna() & ~frame.case_id.isin(excluded) & ~frame.group.isin(excluded)]
    if kept.empty:
        raise InputError(root / "train", "no case-days left to train on after --exclude")
    groups = sorted(kept.group.unique(), key=_case_number)
    if n_folds and len(groups) < 2:
        report(f"only one case ({groups[0]}, {len(kept)} case-day(s)) in {root / 'train'}: no cross-validation, "
               f"training on all of it into {run_dir / 'full'}")
        n_folds = cfg["data"]["folds"] = 0
        fold = None
    if n_folds > len(groups):
        raise InputError(root / "train", f"{len(groups)} cases (after --exclude) cannot make {n_folds} folds; "
                                         f"use --folds {len(groups)} or fewer")
    if fold is not None:
        if n_folds == 0:
            raise InputError("--fold", "there are no folds without cross-validation (folds = 0)")
        if not 0 <= int(fold) < n_folds:
            raise InputError("--fold", f"must be in 0..{n_folds - 1} for {n_folds} folds, got {fold}")
    todo: list[int | None] = [None] if n_folds == 0 else ([int(fold)] if fold is not None else list(range(n_folds)))

    write_json(run_dir / "workflow.json", {"root": str(root.resolve()), "config": str(config),
                                           "overrides": list(overrides), "folds": n_folds, "seed": int(seed),
                                           "exclude": list(cfg["data"]["exclude"])})
    return [_train_fold(cfg, root, run_dir, k, n_folds, resume, report) for k in todo]


def _train_fold(config: dict, root: Path, run_dir: Path, fold: int | None, n_folds: int, resume: bool,
                report) -> FoldResult:
    from seg25d.pipeline.data import split_manifest
    from seg25d.pipeline.training import train

    cfg = copy.deepcopy(config)
    if fold is not None:
        cfg["data"]["fold"] = fold
    out_dir = run_dir / ("full" if fold is None else f"fold{fold}")
    name = "all cases" if fold is None else f"fold {fold}/{n_folds}"
    train_rows, val_rows = split_manifest(cfg["data"]["manifest"], cfg["data"], seed=int(cfg["train"]["seed"]))
    train_names, val_names = list(train_rows.case_id), list(val_rows.case_id)
    report(f"{name}: training on {_count(len(train_names), 'case-day')} ({_count(train_rows.group.nunique(), 'case')}), "
           f"validating on {_count(len(val_names), 'case-day')} ({_count(val_rows.group.nunique(), 'case')}) "
           f"-> {out_dir}")
    result = train(cfg, out_dir, resume=resume and (out_dir / "last.pt").exists())
    checkpoint = result.best_checkpoint or result.last_checkpoint
    score_path = out_dir / "fold_score.json"
    if not val_names:
        if score_path.exists():
            score_path.unlink()
        message = f"{name}: no held-out case-days, so no fold score (trained {result.steps} steps -> {checkpoint})"
        report(message)
        return FoldResult(fold, out_dir, checkpoint, result.steps, train_names, val_names, None, message)

    from seg25d.pipeline.kaggle.score import score_submission

    submission, truth = out_dir / "val_submission.csv", out_dir / "val_truth.csv"
    written = submit([checkpoint], root, submission, split="train", case_days=val_names, use_sample=False,
                     progress=bool(cfg["train"]["progress"]), device=cfg["train"]["device"])
    _write_truth(root, val_names, written.order, truth)
    score = score_submission(submission, truth, root, split="train")
    payload = {"fold": fold, "folds": n_folds, "n_case_days": len(val_names), **score,
               "checkpoint": str(checkpoint), "steps": result.steps, "best_val_dice": result.best_score,
               "val_case_days": val_names, "train_case_days": train_names,
               "val_cases": sorted(val_rows.group.unique(), key=_case_number),
               "train_cases": sorted(train_rows.group.unique(), key=_case_number)}
    write_json(score_path, payload)
    message = (f"{name}: score {_fmt(score['score'])} (dice {_fmt(score['dice'])}, hausdorff "
               f"{_fmt(score['hausdorff'])}) on {len(val_names)} case-days -> {score_path}")
    report(message)
    return FoldResult(fold, out_dir, checkpoint, result.steps, train_names, val_names, payload, message)


def _write_truth(root: Path, case_days: Sequence[str], order: pd.DataFrame, out_csv: Path) -> None:
    """``train.csv``'s rows of ``case_days`` as ``id,class,segmentation``, in the submission's row order."""
    labels = read_train_csv(root / "train.csv")
    labels = labels[labels.case_day.isin(set(case_days))]
    merged = order[["id", "class"]].merge(labels[["id", "class", "segmentation"]], on=["id", "class"], how="left",
                                          validate="one_to_one")
    missing = merged.segmentation.isna()
    if missing.any():
        raise InputError(root / "train.csv", f"no row for {merged.id[missing].iat[0]} {merged['class'][missing].iat[0]}")
    write_csv(out_csv, merged)


# --- prediction --------------------------------------------------------------------------------------------


class Ensemble:
    """Checkpoints whose per-class probabilities are averaged, classes matched by name to :data:`CLASSES`;
    with ``tta`` each also averages over flips of the slices' rows and columns (four passes)."""

    def __init__(self, checkpoints: Sequence[str | os.PathLike], tta: bool = False, device: str = "auto"):
        from seg25d.pipeline.predict import Predictor

        if not checkpoints:
            raise InputError("--model", "give at least one checkpoint")
        self.checkpoints = [Path(c) for c in checkpoints]
        self.tta = bool(tta)
        self.members: list[tuple[object, list[int]]] = []
        for path in self.checkpoints:
            predictor = Predictor(path, device)  # every member on the one device
            classes = list(predictor.spec.classes)
            missing = [c for c in CLASSES if c not in classes]
            if missing:
                raise InputError(path, f"the model has no {' or '.join(missing)} output (its classes: "
                                       f"{', '.join(classes)}); every model must predict {', '.join(CLASSES)}")
            self.members.append((predictor, [classes.index(c) for c in CLASSES]))

    def probabilities(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Mean per-class probabilities ``(3, D, H, W)`` float32 in :data:`CLASSES` order on ``image``'s grid.

        Args:
            image: ``(D, H, W)`` raw intensities.
            spacing: ``(D, H, W)`` voxel size in mm.
        """
        from seg25d.pipeline.io import Volume, synthetic_meta

        image = np.asarray(image)
        volume = Volume(image, synthetic_meta(image.shape, spacing))
        total = np.zeros((len(CLASSES), *image.shape), dtype=np.float32)
        for (predictor, index), path in zip(self.members, self.checkpoints):
            probs = predictor.probabilities(volume, tta=True) if self.tta else predictor.probabilities(volume)
            probs = np.asarray(probs)
            if probs.shape[1:] != image.shape:
                raise InputError(path, f"probabilities of shape {probs.shape[1:]} for an image of {image.shape}")
            total += probs[index].astype(np.float32, copy=False)
        return total / np.float32(len(self.members))


def remove_small_components(masks: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 2D connected components (4-connected, per slice and class) of fewer than ``min_area`` pixels.

    Args:
        masks: boolean ``(..., H, W)``; every 2D slice is treated on its own.
        min_area: the smallest component kept, in pixels (0 or 1 keeps everything).

    Returns:
        A boolean array of the same shape.
    """
    from scipy import ndimage

    masks = np.asarray(masks, dtype=bool)
    if int(min_area) <= 1 or not masks.any():
        return masks.copy()
    planes = masks.reshape(-1, *masks.shape[-2:])
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # no links between slices
    labels, _ = ndimage.label(planes, structure=structure)
    keep = np.bincount(labels.ravel()) >= int(min_area)
    keep[0] = False
    return keep[labels].reshape(masks.shape)


def predict_case_days(ensemble: Ensemble, case_days: Sequence[CaseDay], threshold: float = 0.5,
                      min_area: int = 0, progress: bool = True) -> pd.DataFrame:
    """Predict case-days into submission rows.

    Returns:
        ``id,class,predicted`` (RLE row-major, ``""`` for no mask): case-days in the given order, then
        slice number, then :data:`CLASSES` order.
    """
    from tqdm import tqdm

    ids: list[str] = []
    classes: list[str] = []
    rles: list[str] = []
    for case_day in tqdm(case_days, desc="predict", unit="case-day", disable=not progress, dynamic_ncols=True):
        volume = load_case_day(case_day)
        probs = ensemble.probabilities(volume.image, volume.spacing)
        masks = remove_small_components(probs >= threshold, min_area)
        for k, number in enumerate(volume.slice_numbers):
            sid = str(case_day.slice_id(number))
            for c, cls in enumerate(CLASSES):
                ids.append(sid)
                classes.append(cls)
                rles.append(rle_encode(masks[c, k]))
    return pd.DataFrame({"id": ids, "class": classes, "predicted": rles}, columns=list(SUBMISSION_COLUMNS))


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame | None:
    """The ``id,class`` rows of ``sample_submission.csv`` (ids normalised, ``case_day`` added).

    Returns:
        The rows, or None when the file lists no rows (the public competition file is header-only).

    Raises:
        InputError: unreadable file, missing columns, bad ids, unknown classes, repeated rows.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read as CSV: {str(err).splitlines()[0] if str(err) else err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("id", "class") if c not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; expected id,class[,predicted]")
    if frame.empty:
        return None
    ids = [parse_slice_id(text, where=f"{path}, row {row + 2}") for row, text in enumerate(frame["id"])]
    classes = frame["class"].str.strip()
    unknown = ~classes.isin(CLASSES)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(path, f"row {row + 2}: unknown class {classes.iat[row]!r}; expected one of {', '.join(CLASSES)}")
    out = pd.DataFrame({"id": [str(i) for i in ids], "class": classes.to_numpy(),
                        "case_day": [i.case_day for i in ids]})
    repeated = out.duplicated(["id", "class"])
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        raise InputError(path, f"row {row + 2}: {out.id.iat[row]} {out['class'].iat[row]} appears twice")
    return out


@dataclasses.dataclass
class SubmitResult:
    """What :func:`submit` wrote: the CSV, its rows (``order``: ``id,class,predicted``), and counts."""

    path: Path
    split: str
    case_days: list[str]
    n_rows: int
    n_nonempty: int
    order_source: str
    order: pd.DataFrame = dataclasses.field(repr=False)


def submit(checkpoints: Sequence[str | os.PathLike], root: str | os.PathLike, out_csv: str | os.PathLike,
           threshold: float = 0.5, min_area: int = 0, split: str | None = None,
           case_days: Iterable[str] | None = None, use_sample: bool = True, progress: bool = True,
           tta: bool = False, device: str = "auto") -> SubmitResult:
    """``seg25d kaggle submit``: predict case-days with an ensemble and write ``id,class,predicted``.

    Args:
        checkpoints: one or more ``.pt`` files; their probabilities are averaged.
        root: the dataset root.
        out_csv: the submission (written atomically).
        threshold: probability at or above which a pixel belongs to an organ.
        min_area: drop 2D components (per slice and class) smaller than this many pixels.
        split: the image folder under ``root``; None: ``test`` when it exists, else ``train``.
        case_days: predict only these case-days (default: all of the split).
        use_sample: follow ``root/sample_submission.csv``'s rows when it exists and lists any.
        progress: show a progress bar.
        tta: average each model over flips of the rows and columns too (four passes per model).
        device: where the models run (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        InputError: bad threshold or area, unknown case-days, a checkpoint lacking an organ, a sample row that
            no image of the split produces.
    """
    root, out_csv = Path(root), Path(out_csv)
    if out_csv.is_dir():
        raise InputError(out_csv, "--out is a folder; give the submission CSV to write")
    check_out_dir(out_csv.parent, "--out's folder")
    if not (0.0 < float(threshold) <= 1.0):
        raise InputError("--threshold", f"must be in (0, 1], got {threshold}")
    if int(min_area) < 0:
        raise InputError("--min-area", f"must be 0 or more pixels, got {min_area}")
    if split is None:
        split = "test" if (root / "test").is_dir() else "train"
    found = scan_case_days(root, split)
    if not found:
        raise InputError(root / split, "no case-day folders (case{N}/case{N}_day{M}/scans/*.png)")
    by_name = {c.name: c for c in found}
    if case_days is not None:
        wanted = list(dict.fromkeys(case_days))
        absent = [n for n in wanted if n not in by_name]
        if absent:
            raise InputError(absent[0], f"no such case-day under {root / split}")
        found = [by_name[n] for n in wanted]

    sample_path = root / "sample_submission.csv"
    sample = read_sample_submission(sample_path) if use_sample and sample_path.is_file() else None
    if sample is not None:
        known = {c.name for c in found}
        absent = sample[~sample.case_day.isin(known)]
        if len(absent):
            raise InputError(sample_path, f"{absent.id.iat[0]} {absent['class'].iat[0]}: no case-day "
                                          f"{absent.case_day.iat[0]} under {root / split} to predict it from")
        needed = set(sample.case_day)
        skipped = [c.name for c in found if c.name not in needed]
        if skipped:
            log.info("%d case-day(s) not in %s are not predicted", len(skipped), sample_path)
        found = [c for c in found if c.name in needed]

    ensemble = Ensemble(checkpoints, tta, device)
    rows = predict_case_days(ensemble, found, threshold, min_area, progress)
    source = "case-day, slice, class"
    if sample is not None:
        merged = sample[["id", "class"]].merge(rows, on=["id", "class"], how="left", validate="one_to_one")
        missing = merged.predicted.isna()
        if missing.any():
            sid, cls = merged.id[missing].iat[0], merged["class"][missing].iat[0]
            raise InputError(sample_path, f"{sid} {cls}: no such slice under {root / split} "
                                          f"({int(missing.sum())} sample row(s) cannot be produced)")
        rows = merged
        source = str(sample_path)
    write_csv(out_csv, rows)
    return SubmitResult(out_csv, split, [c.name for c in found], len(rows), int((rows.predicted != "").sum()),
                        source, rows)


# --- cross-validation table --------------------------------------------------------------------------------


_CV_COLUMNS = ("fold", "n_case_days", "score", "dice", "hausdorff", *(f"dice_{c}" for c in CLASSES))


def collect_cv(run_dir: str | os.PathLike) -> dict:
    """Gather ``RUN_DIR/fold*/fold_score.json`` into ``RUN_DIR/cv.json`` and ``RUN_DIR/cv.csv`` (atomic).

    Returns:
        ``{"run", "folds": [row per fold], "mean": row, "n_folds", "folds_expected"}``; a row holds
        ``fold, n_case_days, score, dice, hausdorff, dice_<organ>`` (the mean: of the fold values, the
        case-days summed).

    Raises:
        InputError: no run folder, no fold with a score, an unreadable score file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(run_dir, "run folder not found")
    files = [p for p in run_dir.glob("fold*/fold_score.json") if _FOLD_DIR.fullmatch(p.parent.name)]
    files.sort(key=lambda p: int(_FOLD_DIR.fullmatch(p.parent.name).group(1)))
    if not files:
        hint = (f"; {run_dir / 'full'} is a run without cross-validation (its score, if any, is not a fold's)"
                if (run_dir / "full").is_dir() else "")
        raise InputError(run_dir, f"no fold has a score (no fold*/fold_score.json): train folds with "
                                  f"'seg25d kaggle train --out {run_dir}' first{hint}")
    rows, expected = [], set()
    for path in files:
        try:
            data = json.loads(path.read_text())
            per_class = data["dice_per_class"]
            row = {"fold": int(data["fold"]), "n_case_days": int(data["n_case_days"]),
                   "score": _number(data["score"]), "dice": _number(data["dice"]),
                   "hausdorff": _number(data["hausdorff"]),
                   **{f"dice_{c}": _number(per_class[c]) for c in CLASSES}}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(path, f"not a fold score file ({type(err).__name__}: {err})") from None
        rows.append(row)
        if data.get("folds"):
            expected.add(int(data["folds"]))
    frame = pd.DataFrame(rows, columns=list(_CV_COLUMNS))
    mean = {"fold": "mean", "n_case_days": int(frame.n_case_days.sum())}
    for column in _CV_COLUMNS[2:]:
        values = frame[column].astype(float)
        mean[column] = float(values.mean()) if values.notna().any() else float("nan")
    result = {"run": str(run_dir), "folds": rows, "mean": mean, "n_folds": len(rows),
              "folds_expected": max(expected) if expected else None}
    from seg25d.pipeline.provenance import provenance

    write_json(run_dir / "cv.json", {**result, "benchmark": "kaggle_cv", "provenance": provenance()})
    write_csv(run_dir / "cv.csv", pd.DataFrame([*rows, mean], columns=list(_CV_COLUMNS)))
    return result


def format_cv_table(result: dict) -> str:
    """The table ``seg25d kaggle cv`` prints: one line per fold and the mean."""
    organs = [c for c in CLASSES]
    header = f"{'fold':>5} {'case-days':>9} {'score':>7} {'dice':>7} {'hausdorff':>9} " + \
             " ".join(f"{o:>11}" for o in organs)
    lines = [header]
    for row in [*result["folds"], result["mean"]]:
        lines.append(f"{row['fold']!s:>5} {row['n_case_days']:>9} {_fmt(row['score']):>7} {_fmt(row['dice']):>7} "
                     f"{_fmt(row['hausdorff']):>9} " + " ".join(f"{_fmt(row[f'dice_{o}']):>11}" for o in organs))
    return "\n".join(lines)


# --- helpers -----------------------------------------------------------------------------------------------


def _case_number(group: str) -> tuple[int, str]:
    match = re.fullmatch(r"case(\d+)", str(group))
    return (int(match.group(1)), "") if match else (-1, str(group))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
