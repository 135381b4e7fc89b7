"""Score a folder of predicted label volumes against a manifest's reference labels.

For every manifest row with a label, ``<pred_dir>/<case_id><ext>`` is read, checked against the
label's grid, decoded into per-class masks with the manifest's LabelSpec and scored with
``binary_metrics``. A case that cannot be scored (missing or unreadable prediction, other shape or
geometry) becomes one row with an ``error`` message and no metrics; the other cases go on. A reference label
holding values no class declares (or non-integer values) is scored with them as background, and says so: a
warning line and the ``label_warning`` column of its rows.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from seg25d.pipeline.atomic import full_suffix, write_csv, write_json
from seg25d.pipeline.provenance import command_line
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import SUPPORTED_EXTENSIONS, read_volume
from seg25d.pipeline.manifest import LabelSpec, label_spec_or_infer, label_value_problem, read_manifest
from seg25d.pipeline.metrics import EMPTY_POLICIES, METRICS, binary_metrics, summarize
from seg25d.pipeline.outputs import check_out_dir, inside

__all__ = ["COLUMNS", "AFFINE_TOLERANCE_MM", "evaluate", "find_prediction"]

log = logging.getLogger(__name__)

COLUMNS = ("case_id", "class", *METRICS, "label_warning", "error")
AFFINE_TOLERANCE_MM = 1e-4


def evaluate(pred_dir: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike,
             classes: Sequence[str] | None = None, empty: str = "nan",
             split: str | None = None) -> pd.DataFrame:
    """Compute per-(case, class) metrics and write ``metrics.csv`` and ``summary.json``.

    Args:
        pred_dir: folder with one predicted label volume per case, named ``<case_id><ext>``
            (the label's extension first, then any supported one), encoded like the labels.
        manifest: manifest CSV; its LabelSpec sidecar decodes the labels. Without a sidecar an
            index encoding over the nonzero values found in the reference labels is assumed.
        out_dir: where ``metrics.csv`` and ``summary.json`` are written (atomically).
        classes: class names to score (default: all of the LabelSpec's).
        empty: empty-mask policy of ``binary_metrics``, ``"nan"`` or ``"one"``.
        split: score only the manifest rows of this split (train, val or test).

    Returns:
        The metrics table, columns ``COLUMNS``: one row per (case, class) with ``error`` empty (and
        ``label_warning`` set when the reference label holds undeclared values), and one row per failed case
        with ``class`` and the metrics empty and ``error`` set.

    Raises:
        InputError: unknown class or policy, no labelled rows to score, missing prediction folder, an ``out_dir``
            that cannot be a folder.
    """
    pred_dir, manifest, out_dir = Path(pred_dir), Path(manifest), check_out_dir(out_dir)
    if empty not in EMPTY_POLICIES:
        raise InputError(None, f"empty-mask policy must be one of {', '.join(EMPTY_POLICIES)}, got {empty!r}")
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder does not exist")
    cases = _labelled_rows(read_manifest(manifest), manifest, split)
    spec = label_spec_or_infer(manifest, cases)
    selected = _select_classes(spec, classes, manifest)

    rows: list[dict] = []
    failures: list[dict] = []
    for case in tqdm(cases.itertuples(index=False), total=len(cases), desc="evaluate", unit="case", disable=None):
        case_id = str(case.case_id)
        try:
            rows.extend(_score_case(case_id, Path(case.label), pred_dir, spec, selected, empty))
        except Exception as err:  # one bad case must not stop the batch; it is reported instead
            message = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
            log.warning("%s: %s", case_id, message)
            log.debug("%s failed", case_id, exc_info=True)
            failures.append({"case_id": case_id, "error": message})
            rows.append({"case_id": case_id, "class": None, "error": message})

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    summary = summarize(frame)
    warned = frame.dropna(subset=["label_warning"]).drop_duplicates("case_id")[["case_id", "label_warning"]]
    summary.update({"empty_policy": empty, "split": split, "n_cases": int(len(cases)),
                    "n_failed": len(failures), "failures": failures, "label_warnings": warned.to_dict("records"),
                    "pred_dir": str(pred_dir.resolve()),
                    "manifest": str(manifest.resolve()), "command": command_line()})
    write_csv(out_dir / "metrics.csv", frame)
    write_json(out_dir / "summary.json", summary)
    return frame


def find_prediction(pred_dir: Path, case_id: str, label_path: Path) -> Path | None:
    """The prediction file for a case: ``<case_id>`` + the label's extension, else any supported one."""
    for ext in (full_suffix(label_path), *SUPPORTED_EXTENSIONS):
        if ext and inside(pred_dir, f"{case_id}{ext}").is_file():
            return pred_dir / f"{case_id}{ext}"
    if inside(pred_dir, case_id).is_dir():  # a DICOM folder
        return pred_dir / case_id
    return None


def _score_case(case_id: str, label_path: Path, pred_dir: Path, spec: LabelSpec, selected: Sequence[int],
                empty: str) -> list[dict]:
    pred_path = find_prediction(pred_dir, case_id, label_path)
    if pred_path is None:
        raise InputError(pred_dir, f"no prediction {case_id}{full_suffix(label_path)} (nor another supported "
                                   "extension)")
    truth = read_volume(label_path)
    pred = read_volume(pred_path)
    if tuple(pred.array.shape) != tuple(truth.array.shape):
        raise InputError(pred_path, f"prediction shape {tuple(pred.array.shape)} differs from the label's "
                                    f"{tuple(truth.array.shape)}")
    offset = float(np.max(np.abs(np.asarray(pred.meta.affine, float) - np.asarray(truth.meta.affine, float))))
    if not offset <= AFFINE_TOLERANCE_MM:
        raise InputError(pred_path, f"prediction geometry differs from the label's (affine differs by up to "
                                    f"{offset:.3g} mm)")
    warning = label_value_problem(truth.array, spec)
    if warning:
        log.warning("%s: %s; scored as background", label_path, warning)
    undeclared = label_value_problem(pred.array, spec)
    if undeclared:
        log.warning("%s: prediction: %s; scored as background", pred_path, undeclared)
    true_masks = spec.masks(truth.array)
    pred_masks = spec.masks(pred.array)
    spacing = tuple(float(s) for s in truth.meta.spacing)
    rows = []
    for k in selected:
        values = binary_metrics(pred_masks[k], true_masks[k], spacing, empty=empty)
        rows.append({"case_id": case_id, "class": spec.classes[k], **values, "label_warning": warning, "error": None})
    return rows


def _labelled_rows(frame: pd.DataFrame, manifest: Path, split: str | None) -> pd.DataFrame:
    if split is not None:
        frame = frame[frame["split"] == split]
    labelled = frame[frame["label"].notna() & (frame["label"].astype(str) != "")]
    if labelled.empty:
        where = f"split {split!r}" if split is not None else "the manifest"
        raise InputError(manifest, f"no rows with a label to evaluate in {where}")
    return labelled.reset_index(drop=True)


def _select_classes(spec: LabelSpec, classes: Sequence[str] | None, manifest: Path) -> list[int]:
    names = list(spec.classes)
    if not classes:
        return list(range(len(names)))
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise InputError(manifest, f"unknown class {', '.join(map(repr, unknown))}; valid classes: "
                                   f"{', '.join(names)}")
    return [names.index(c) for c in dict.fromkeys(classes)]
