#!/usr/bin/env bash
# The ambiguity benchmark (benchmarks/ambiguity.py) on a lent GPU, in one device call of at most
# 10 minutes: the phantom made by 14 processes, a wider t1c model than the CPU table's trained for
# MINUTES on the GPU (bf16), every sampler setting of the README's table sampled on the GPU and
# scored on the CPU cores. Run from the repository root on the device machine:
#
#     bash benchmarks/ambiguity_device.sh [FLAGS]
#
# (FLAGS: more benchmarks/ambiguity.py flags, which override the ones below; e.g. a smoke run on the
# CPU: --device cpu --train_cases 3 --test_cases 1 --detail_draws 2 --more_subjects 2 --steps 4
# --model_channels 8 --settings ddim:2 ddim:2x2 --noise ddim:2x2 --noise_seeds 1 --segmenter_steps 5)
#
# with the device tool's carry ".whl" (the nibabel wheel the machine's image lacks: README's
# "Measured" says how to fetch it) and, optionally, ".device" holding segmenter.pt (the phantom
# segmenter trained here on the same training set, which saves the device's minutes). Environment:
# MINUTES (training time, default 4.5), CHANNELS (32), RES_BLOCKS (2), BATCH (8), WORK (the
# benchmark's folder, default /tmp/cwdm-ambiguity-gpu: a second call on the same warm machine
# continues where the first stopped). Writes to $OUT (or ./device-out): the table, CSV and plot, the
# log, and model_fp16.pt, the EMA weights in float16 (benchmarks/device_model.py restores them).
set -euo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-device-out}
work=${WORK:-/tmp/cwdm-ambiguity-gpu}
mkdir -p "$out" "$work"
if ! python3 -c "import nibabel" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -f .device/segmenter.pt ] && [ ! -f "$work/segmenter.pt" ]; then
    cp .device/segmenter.pt "$work/segmenter.pt"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
date -u +"start %T"
python3 benchmarks/ambiguity.py --out "$work" --device cuda --threads 16 --workers 14 \
    --detail_draws 16 --more_subjects 448 --steps 1000000 --train_minutes "${MINUTES:-4.5}" \
    --model_channels "${CHANNELS:-32}" --num_res_blocks "${RES_BLOCKS:-2}" --batch_size "${BATCH:-8}" \
    --prediction edm --timestep_power 2 \
    --settings ddpm:1000 ddim:100 ddim:20 ddim:10 ddim:5 regression:1 ddim:10x4 ddim:10x10 ddim:100x4 ddpm:100x4 "$@" \
    2>&1 | sed -u -E 's/.*\r//; /(\/s|\/it)\]$/d' | tee "$out/log.txt"
date -u +"end %T"
cp "$work"/ambiguity.csv "$work"/ambiguity.md "$work"/ambiguity.png "$out"/
python3 benchmarks/device_model.py pack "$work/run" "$out/model_fp16.pt"
