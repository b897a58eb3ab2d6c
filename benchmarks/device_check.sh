#!/usr/bin/env bash
# The GPU checks of issues 4 and 7 as prepared commands, for a session that is lent a device machine (the library's
# `device` tool: one H200, Python 3.12 with torch, no package registry, 15 minutes of device time per session).
#
# Why a script: device time runs from the machine's start, so each check must be one call, ready before the machine is
# asked for. The check here (benchmarks/RESULTS.md records what it measured):
#   throughput  train_throughput.py (tokens/s and MFU against the same-run bf16 matmul peak; dense and expert training,
#               `small` and `demo` sizes, and `small` again with the step compiled; issue 4's >= 35% at `small`) and
#               moe_inference.py (issue 7's 1.2x target)
# The `small` science run (issue 7's report) outlasts one call and its data outweighs one call's 64 MiB: it runs in
# resumable steps through benchmarks/device_science.sh (`prepare science` here packs its data for it).
#
# Usage, in the repository root:
#   benchmarks/device_check.sh prepare [science]   # here: the wheels the image lacks -> .whl/ (git-ignored); with
#                                                 # `science` also `benchmarks/device_science.sh pack small` (CPU, here)
#   device run: command "bash benchmarks/device_check.sh run throughput", carry [".whl"], timeout_s 420
#   PYTHON=.venv/bin/python DEVICE=cpu STEPS=1 WARMUP=1 SIZES=tiny benchmarks/device_check.sh run throughput  # dry run
# Outputs under $OUT (./device_check/ when OUT is unset): device_check.log and each check's JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

# The device image has torch, tokenizers, safetensors, numpy, pandas, pyyaml, matplotlib and rich, but another
# transformers and none of these. .whl/ is in .gitignore (the device tool carries ignored paths only).
WHEEL_PACKAGES=(transformers opacus pydantic pydantic_core annotated-types typing-inspection typing_extensions)
WHEEL_DIR=.whl
OUT_DIR=${OUT:-device_check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}  # fp32 for a dry run on a CPU without native bf16 (emulated bf16 matmuls take minutes)

pinned() {  # the version requirements.lock pins for $1
    local line
    line=$(grep -iE "^${1//[-_]/[-_]}==" requirements.lock) || { echo "requirements.lock pins no $1" >&2; exit 1; }
    echo "${line%%+*}"
}

prepare() {
    local specs=()
    for package in "${WHEEL_PACKAGES[@]}"; do specs+=("$(pinned "$package")"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$WHEEL_DIR" "${specs[@]}"
    du -sh "$WHEEL_DIR"
    if [[ ${1:-} == science ]]; then
        PYTHON=.venv/bin/python bash benchmarks/device_science.sh pack small
    fi
}

setup_device() {
    if [[ $DEVICE == cuda* ]]; then
        ls "$WHEEL_DIR"/*.whl > /dev/null || { echo "no wheels in $WHEEL_DIR: run '$0 prepare' here and carry .whl" >&2; exit 1; }
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl
        export PYTHONPATH=/tmp/site
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    fi
    "$PYTHON" -c "import platform, torch, transformers; print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
}

throughput() {
    local steps=${STEPS:-12} warmup=${WARMUP:-3} sizes=${SIZES:-small demo} threads=${THREADS:-8}
    # shellcheck disable=SC2086  # sizes is a list
    "$PYTHON" benchmarks/train_throughput.py --sizes $sizes --kinds dense expert --device "$DEVICE" --precision "$PRECISION" \
        --steps "$steps" --warmup "$warmup" --threads "$threads" --json-out "$OUT_DIR/train_throughput.json"
    # the same at the first size with the step compiled (runtime.compile): the warm-up steps include the compile
    "$PYTHON" benchmarks/train_throughput.py --sizes "${sizes%% *}" --kinds dense expert --device "$DEVICE" --precision "$PRECISION" \
        --steps "$steps" --warmup "$warmup" --threads "$threads" --compile --json-out "$OUT_DIR/train_throughput_compiled.json"
    for size in $sizes; do
        "$PYTHON" benchmarks/moe_inference.py --profile "$size" --device "$DEVICE" --precision "$PRECISION" --threads "$threads" \
            | tee -a "$OUT_DIR/moe_inference.log"
    done
    grep '^{' "$OUT_DIR/moe_inference.log" > "$OUT_DIR/moe_inference.json"
}

run() {
    [[ $# -gt 0 ]] || { echo "usage: $0 run throughput" >&2; exit 2; }
    mkdir -p "$OUT_DIR"
    export PYTHONUNBUFFERED=1
    {
        setup_device
        for check in "$@"; do
            case $check in
                throughput) "$check" ;;
                science) echo "the science run is benchmarks/device_science.sh (resumable steps)" >&2; exit 2 ;;
                *) echo "unknown check '$check' (throughput)" >&2; exit 2 ;;
            esac
        done
    } 2>&1 | tee -a "$OUT_DIR/device_check.log"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare [science] | run throughput" >&2; exit 2 ;;
esac
