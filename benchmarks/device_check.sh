#!/usr/bin/env bash
# The GPU checks of issues 4 and 7 as one prepared command, for a session that is lent a device machine (the library's
# `device` tool: one H200, Python 3.12 with torch, no registries, 15 minutes of device time per session).
#
# Why a script: device time is counted from the machine's start, so the checks must run as one short call that is ready
# before the machine is asked for. What it measures (benchmarks/RESULTS.md records the numbers):
#   - train_throughput.py: tokens/s and MFU against the same-run bf16 matmul peak, public (dense) and expert training,
#     `small` and `demo` sizes, bf16 autocast on CUDA (issue 4's target: >= 35% at `small`)
#   - moe_inference.py: the assembled MoE against the dense M_pub at `small` size on CUDA (issue 7's 1.2x target)
#
# Usage, in the repository root:
#   benchmarks/device_check.sh prepare   # here, once: the wheels the device image lacks -> .whl/ (git-ignored)
#   device run: command "bash benchmarks/device_check.sh run", carry [".whl"], timeout_s 540
#   PYTHON=.venv/bin/python DEVICE=cpu STEPS=1 WARMUP=1 SIZES=tiny benchmarks/device_check.sh run   # a dry run here
# Outputs: $OUT/device_check.log, $OUT/train_throughput.json, $OUT/moe_inference.json (./device_check/ when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."

# .whl/ is in .gitignore (carry takes ignored paths only). The device image has torch, tokenizers, safetensors, numpy, pyyaml and rich, but another transformers and none of these.
WHEEL_PACKAGES=(transformers opacus pydantic pydantic_core annotated-types typing-inspection typing_extensions)
WHEEL_DIR=.whl

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
    ls -l "$WHEEL_DIR"
    du -sh "$WHEEL_DIR"
}

run() {
    local out=${OUT:-device_check} python=${PYTHON:-python3} device=${DEVICE:-cuda}
    local steps=${STEPS:-12} warmup=${WARMUP:-3} sizes=${SIZES:-small demo} threads=${THREADS:-8}
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    if [[ $device == cuda* ]]; then
        ls "$WHEEL_DIR"/*.whl > /dev/null || { echo "no wheels in $WHEEL_DIR: run '$0 prepare' here and carry .whl" >&2; exit 1; }
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEEL_DIR"/*.whl
        export PYTHONPATH=/tmp/site
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out/device_check.log"
    fi
    {
        "$python" -c "import platform, torch, transformers; print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
        # shellcheck disable=SC2086  # sizes is a list
        "$python" benchmarks/train_throughput.py --sizes $sizes --kinds dense expert --device "$device" --precision bf16 \
            --steps "$steps" --warmup "$warmup" --threads "$threads" --json-out "$out/train_throughput.json"
        for size in $sizes; do
            "$python" benchmarks/moe_inference.py --profile "$size" --device "$device" --precision bf16 --threads "$threads" \
                | tee -a "$out/moe_inference.log"
        done
        grep '^{' "$out/moe_inference.log" > "$out/moe_inference.json"
    } 2>&1 | tee -a "$out/device_check.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
