#!/usr/bin/env bash
# cwdm: edit the settings below, then run `bash run.sh`.
# Every mode runs one `cwdm` command (printed before it starts); `cwdm <command> --help` lists all flags.
# Each setting can also be given in the environment, e.g. `MODE=sample CONTR=t2f bash run.sh`.
set -euo pipefail

# ---- general settings ----------------------------------------------------------------
MODE=${MODE:-train}            # train | distill | sample | auto | dropout | evaluate | demo (training / sampling: the reference's names)
PYTHON=${PYTHON:-}             # python with cwdm installed; empty: the one the `cwdm` command runs, else python3
GPU=${GPU:-0}                   # GPU to use (ignored without CUDA); several GPUs: set NPROC
NPROC=${NPROC:-1}                 # processes (GPUs) for torchrun; 1 = plain python
SEED=${SEED:-42}                 # randomness seed (training data order / sampling noise)
CHANNELS=${CHANNELS:-64}             # base channels (64 for the released models)
CHANNEL_MULT=${CHANNEL_MULT:-1 2 2 4 4}   # channel multiplier per level (released: 1 2 2 4 4)
NUM_RES_BLOCKS=${NUM_RES_BLOCKS:-2}    # residual blocks per level (released: 2)
NUM_GROUPS=${NUM_GROUPS:-32}    # GroupNorm groups (released: 32; must divide CHANNELS)
ADDITIVE_SKIP=${ADDITIVE_SKIP:-False}     # True: average skips instead of concatenating (less memory)
CONTR=${CONTR:-t1n}             # target contrast: t1n, t1c, t2w or t2f; any = one unified network for every modality
TASK=${TASK:-synthesis}         # synthesis | inpainting (fill a region of a t1n, BraTS inpainting; train: --inpainting True, sample: read from the checkpoint)

# ---- training ---------------------------------------------------------------------------
DATA_DIR=${DATA_DIR:-./datasets/BraTS2023/training}   # BraTS-layout training folder
RUN_DIR=${RUN_DIR:-./runs/$([ "$TASK" = inpainting ] && echo inpainting || echo "$CONTR")}   # checkpoints, TensorBoard logs, config.json
ITERATIONS=${ITERATIONS:-1200000}      # training steps (released models: about 1.2 million)
BATCH_SIZE=${BATCH_SIZE:-1}
LR=${LR:-1e-5}
SAVE_INTERVAL=${SAVE_INTERVAL:-100000}
RESUME=${RESUME:-auto}             # auto: continue the run in RUN_DIR if there is one; none: refuse an existing run
DROP_CONDITIONS=${DROP_CONDITIONS:-False}   # CONTR=any: also train on random subsets of the inputs (completes cases missing several)
MASK_WEIGHT=${MASK_WEIGHT:-1}       # TASK=inpainting: weight of the filled region in the loss (1 = plain MSE)

# ---- sampling / inference ----------------------------------------------------------------
VAL_DIR=${VAL_DIR:-./datasets/BraTS2023/validation}              # cases to synthesize (sample mode; TASK=inpainting: cases of the challenge layout)
MODEL_PATH=${MODEL_PATH:-./checkpoints/brats_${CONTR}_1200000.pt}   # released state_dict or cwdm checkpoint
MODELS_DIR=${MODELS_DIR:-./checkpoints}                             # auto mode: one checkpoint per contrast (CONTR=any: MODEL_PATH instead)
AUTO_DIR=${AUTO_DIR:-./datasets/BraTS2023/pseudo_validation}      # auto mode: case folders missing one modality
SYNTH=${SYNTH:-}                    # sample mode with a unified model (CONTR=any): the modality to synthesize
OUTPUT_DIR=${OUTPUT_DIR:-./results}
SAMPLER=${SAMPLER:-}                # ddpm | ddim | ddim_trailing | regression; empty: the sampler a distilled student records, else ddpm
SAMPLING_STEPS=${SAMPLING_STEPS:-}  # network calls; empty: the student's, else 1000 (ddpm 1000 = the reference)
ENSEMBLE=${ENSEMBLE:-1}              # >1: average several samples and write a std (uncertainty) map
PRECISION=${PRECISION:-fp32}         # fp32 (exact, the reference's numbers) | tf32 | bf16 (faster on GPUs, not exact)
SEG_DIR=${SEG_DIR:-}                 # evaluate mode: your model's segmentations of the completed cases (Dice); empty: none
COMPILE=${COMPILE:-auto}             # auto (on a CPU for runs of >= 20 full-size calls, e.g. ddpm: 0.78-0.89x per call) | True | False

# ---- distillation (MODE=distill: a student that samples in 1 or 2 network calls) -----------
TEACHER=${TEACHER:-$MODEL_PATH}      # the checkpoint to distill (cwdm checkpoint or released state_dict); cases from DATA_DIR
STUDENT_STEPS=${STUDENT_STEPS:-1}     # network calls of the student: 1 or 2
TEACHER_STEPS=${TEACHER_STEPS:-20}    # DDIM calls of the teacher whose samples the student learns to match
DISTILL_DIR=${DISTILL_DIR:-./runs/${CONTR}_distill${STUDENT_STEPS}}   # the student's run folder (RESUME applies)
DISTILL_ITERATIONS=${DISTILL_ITERATIONS:-20000}   # distillation steps (each runs the teacher TEACHER_STEPS times)
DISTILL_SAVE_INTERVAL=${DISTILL_SAVE_INTERVAL:-1000}

# -------------------------------------------------------------------------------------------
# PYTHON default: the interpreter of the installed `cwdm` command, so no environment has to be
# activated. Its first line is `#!/path/python`, `#!/usr/bin/env python`, or `#!/bin/sh` (pip's
# launcher for long paths, interpreter on the `'''exec'` line); anything else (a pyenv shim): python3.
cwdm_python() {
  local entry line rest interp=""
  local -a words
  entry=$(command -v cwdm 2>/dev/null) || { echo python3; return; }
  IFS= read -r line < "$entry" || true
  if [ "$line" = "#!/bin/sh" ]; then
    rest=$(sed -n 2p "$entry")
    rest=${rest#"'''exec' "}
    if [ "${rest:0:1}" = '"' ]; then rest=${rest#\"}; interp=${rest%%\"*}; else interp=${rest%% *}; fi
  elif [ "${line:0:2}" = "#!" ]; then
    read -r -a words <<< "${line:2}"
    if [ "${#words[@]}" -gt 1 ] && [ "${words[0]##*/}" = env ]; then interp=${words[1]}; else interp=${words[0]:-}; fi
  fi
  case "${interp##*/}" in
    python*|pypy*) echo "$interp" ;;
    *) echo python3 ;;
  esac
}
PYTHON=${PYTHON:-$(cwdm_python)}
if ! "$PYTHON" -c "import cwdm" >/dev/null 2>&1; then
  echo "run.sh: '$PYTHON' cannot import cwdm; set PYTHON to the python of the environment where cwdm is installed" >&2
  exit 2
fi
if [ "$NPROC" -gt 1 ]; then
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $((NPROC - 1)))}
  LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m cwdm)
else
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$GPU}
  LAUNCH=("$PYTHON" -m cwdm)
fi
NET=(--num_channels "$CHANNELS" --channel_mult $CHANNEL_MULT --num_res_blocks "$NUM_RES_BLOCKS"
     --num_groups "$NUM_GROUPS" --additive_skips "$ADDITIVE_SKIP")
SAMPLING=(${SAMPLER:+--sampler "$SAMPLER"} ${SAMPLING_STEPS:+--sampling_steps "$SAMPLING_STEPS"} --ensemble "$ENSEMBLE"
          --seed "$SEED" --precision "$PRECISION" --compile "$COMPILE")

case "$TASK" in
  synthesis) INPAINTING=False; TRAIN_TARGET=(--contr "$CONTR"); TARGET=(--contr "${SYNTH:-$CONTR}") ;;
  inpainting) INPAINTING=True; TRAIN_TARGET=(); TARGET=() ;;   # the task fixes the target (t1n); sample: the checkpoint says
  *) echo "run.sh: unknown TASK '$TASK' (synthesis, inpainting)" >&2; exit 2 ;;
esac
case "$MODE" in  # the reference's spellings
  training) MODE=train ;;
  sampling) MODE=sample ;;
esac
case "$MODE" in
  train)
    CMD=("${LAUNCH[@]}" train --data_dir "$DATA_DIR" ${TRAIN_TARGET[@]+"${TRAIN_TARGET[@]}"} --run_dir "$RUN_DIR" "${NET[@]}"
         --max_steps "$ITERATIONS" --batch_size "$BATCH_SIZE" --lr "$LR" --save_interval "$SAVE_INTERVAL"
         --seed "$SEED" --resume "$RESUME" --drop_conditions "$DROP_CONDITIONS" --inpainting "$INPAINTING"
         --mask_weight "$MASK_WEIGHT") ;;
  distill)
    CMD=("${LAUNCH[@]}" distill --teacher "$TEACHER" ${TRAIN_TARGET[@]+"${TRAIN_TARGET[@]}"} --num_groups "$NUM_GROUPS"
         --data_dir "$DATA_DIR" --run_dir "$DISTILL_DIR" --student_steps "$STUDENT_STEPS" --teacher_steps "$TEACHER_STEPS"
         --max_steps "$DISTILL_ITERATIONS" --batch_size "$BATCH_SIZE" --lr "$LR" --save_interval "$DISTILL_SAVE_INTERVAL"
         --seed "$SEED" --resume "$RESUME") ;;
  sample)
    CMD=("${LAUNCH[@]}" sample --data_dir "$VAL_DIR" --model_path "$MODEL_PATH" ${TARGET[@]+"${TARGET[@]}"}
         --output_dir "$OUTPUT_DIR" "${NET[@]}" "${SAMPLING[@]}") ;;
  auto)
    if [ "$CONTR" = any ]; then MODELS=(--model "any=$MODEL_PATH"); else MODELS=(--models_dir "$MODELS_DIR"); fi
    CMD=("${LAUNCH[@]}" auto --data_dir "$AUTO_DIR" "${MODELS[@]}" "${NET[@]}" "${SAMPLING[@]}") ;;
  dropout)
    CMD=("$PYTHON" -m cwdm dropout "$VAL_DIR" "$AUTO_DIR") ;;
  evaluate)
    CMD=("$PYTHON" -m cwdm evaluate --pred_dir "$OUTPUT_DIR" --ref_dir "$VAL_DIR" ${SEG_DIR:+--seg_dir "$SEG_DIR"}) ;;
  demo)
    CMD=("$PYTHON" -m cwdm demo) ;;
  *)
    echo "run.sh: unknown MODE '$MODE' (train, distill, sample, auto, dropout, evaluate, demo)" >&2; exit 2 ;;
esac
echo "+ ${CMD[*]}" >&2
exec "${CMD[@]}"
