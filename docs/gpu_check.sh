#!/usr/bin/env bash
# GPU check: the device tests, `bench scaling`, `demo` and a short `bench compare` on CUDA, results under $OUT.
#
# For a machine with torch (CUDA), numpy, scipy, pandas, matplotlib and tqdm but no package index and none of
# nibabel, SimpleITK, monai or pytest. Run from the repository root:
#
#     OUT=/path/to/results bash docs/gpu_check.sh [STAGE ...]     # stages: setup tests scaling demo compare
#
# With no stage it runs all five in order. Each stage logs to $OUT/<stage>.log and appends its exit status and
# seconds to $OUT/summary.tsv; a failed stage does not stop the next one. Every stage has its own time limit, so
# the stages can also be run one call at a time (`setup` first in each fresh environment).
#
# Pure-Python wheels in $WHEELS (default ./wheels) are installed in `setup` without an index. Made on a machine
# with one, for the GPU machine's Python version (demo and compare need nibabel, monai_unet rows need monai, the
# tests need pytest; SimpleITK is not needed once the file-format imports are lazy):
#
#     pip download --only-binary=:all: --no-deps --python-version 3.X -d wheels \
#         nibabel monai pytest pluggy iniconfig importlib_resources
#
# Settings (environment): DEVICE (cuda), PRECISION (bf16), SIZES ("128 192 256 320"),
# SCALING_MODELS ("projection25d unet2d monai_unet"), DEMO_MINUTES (3), COMPARE_MINUTES (2), SKIP_INSTALL (0).
set -uo pipefail

OUT=${OUT:?set OUT to the results folder}
WHEELS=${WHEELS:-wheels}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
SIZES=${SIZES:-128 192 256 320}
SCALING_MODELS=${SCALING_MODELS:-projection25d unet2d monai_unet}
DEMO_MINUTES=${DEMO_MINUTES:-3}
COMPARE_MINUTES=${COMPARE_MINUTES:-2}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"

stage_setup() {
    if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
        if compgen -G "$WHEELS/*.whl" > /dev/null; then
            python -m pip install --no-index --no-deps "$WHEELS"/*.whl || return 1
        fi
        python -m pip install --no-index --no-deps --no-build-isolation -e . || return 1
    fi
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
        python - <<'EOF'
import importlib.util, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
print("optional:", {m: importlib.util.find_spec(m) is not None for m in ("nibabel", "SimpleITK", "monai", "pytest")})
for module in ("seg25d.pipeline.device", "seg25d.pipeline.data", "seg25d.pipeline.training", "seg25d.pipeline.predict"):
    try:
        __import__(module)
        print("imports without the file-format libraries:", module)
    except ImportError as err:
        print("IMPORT FAILS:", module, "-", err)
EOF
    } | tee "$OUT/environment.txt"
}

stage_tests() {
    timeout 480 python -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml" \
        tests/projections tests/pipeline/test_device*.py tests/test_device_guard.py
}

stage_scaling() {
    # shellcheck disable=SC2086 # SIZES and SCALING_MODELS are lists
    timeout 580 seg25d bench scaling --device "$DEVICE" --sizes $SIZES --models $SCALING_MODELS \
        --precision "$PRECISION" --repeats 3 --out "$OUT/scaling"
}

stage_demo() {
    timeout 580 seg25d demo --device "$DEVICE" --minutes "$DEMO_MINUTES" --out "$OUT/demo"
}

stage_compare() {
    seg25d synth vessels --out "$WORK/vessels24" --n 24 --shape 64 96 96 --seed 0 > /dev/null || return 1
    timeout 580 seg25d bench compare --device "$DEVICE" --manifest "$WORK/vessels24/manifest.csv" \
        --budget-minutes "$COMPARE_MINUTES" --models projection25d unet2d --turn-seconds 0 \
        --set train.precision=auto --out "$OUT/compare"
}

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(setup tests scaling demo compare)
status=0
for stage in "${stages[@]}"; do
    if ! declare -F "stage_$stage" > /dev/null; then
        echo "unknown stage '$stage' (setup tests scaling demo compare)" >&2
        exit 2
    fi
    start=$SECONDS
    echo "== $stage" >&2
    "stage_$stage" > "$OUT/$stage.log" 2>&1
    code=$?
    printf '%s\t%s\t%s\n' "$stage" "$code" "$((SECONDS - start))" | tee -a "$OUT/summary.tsv" >&2
    [[ $code -ne 0 ]] && status=1 && tail -n 20 "$OUT/$stage.log" >&2
done
exit $status
