"""The UW-Madison GI Tract Image Segmentation (Kaggle) layout: RLE, case-days, import, the competition score."""

from __future__ import annotations

from seg25d.pipeline.kaggle.layout import (
    CLASSES,
    CLASS_VALUES,
    SLICE_THICKNESS_MM,
    CaseDay,
    CaseDayVolume,
    SliceFile,
    SliceId,
    gi_label_spec,
    import_kaggle,
    load_case_day,
    parse_slice_filename,
    parse_slice_id,
    read_rle_csv,
    read_train_csv,
    scan_case_days,
    stack_masks,
)
from seg25d.pipeline.kaggle.rle import is_empty_rle, rle_decode, rle_encode
from seg25d.pipeline.kaggle.score import normalized_hausdorff, score_submission, truth_to_submission

__all__ = [
    "CLASSES",
    "CLASS_VALUES",
    "SLICE_THICKNESS_MM",
    "CaseDay",
    "CaseDayVolume",
    "SliceFile",
    "SliceId",
    "gi_label_spec",
    "import_kaggle",
    "is_empty_rle",
    "load_case_day",
    "normalized_hausdorff",
    "parse_slice_filename",
    "parse_slice_id",
    "read_rle_csv",
    "read_train_csv",
    "rle_decode",
    "rle_encode",
    "scan_case_days",
    "score_submission",
    "stack_masks",
    "truth_to_submission",
]
