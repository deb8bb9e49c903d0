#!/usr/bin/env bash
# The action-faithfulness recipe for the driving model on one GPU (about 12 minutes on one H100 with
# 16 CPU cores), for the day one is lent:
#   bash scripts/gpu_branching_driving.sh [RUN_FOLDER] [EPISODES]
# 1. records state-independent action data with the 'branching' driver (the track follower
#    interrupted by random held actions), one process per 250 episodes, merged into one store;
# 2. fine-tunes the shipped driving backbone on it (bf16, batch 256);
# 3. writes the counterfactual report of the result beside the shipped model's.
# The CPU recipe is the same with --device cpu --batch-size 16 and fewer steps (docs/results.md).
# Any step resumes after a kill: collect skips finished episodes, train resumes with --resume.
# DEVICE, BATCH, STEPS and CF (extra counterfactual flags) override the GPU settings, e.g. for a
# smoke test on a CPU: DEVICE=cpu BATCH=2 STEPS=2 CF="--starts 1 --no-probes" bash ... runs/smoke 2
set -euo pipefail
run=${1:-runs/gpu_branching}
episodes=${2:-1000}
device=${DEVICE:-cuda}
batch=${BATCH:-256}
steps=${STEPS:-2000}
cf=(${CF:-})
export MUJOCO_GL=egl
mkdir -p "$run"
parts=()
for ((first = 0; first < episodes; first += 250)); do
  part="$run/data_$first.zarr"
  parts+=("$part")
  wfm-sim collect carracing-4cam --policy branching --episodes $((episodes - first < 250 ? episodes - first : 250)) \
    --max-steps 60 --seed $((7000 + first)) --out "$part" --quiet &
done
wait
wfm-sim dataset merge "${parts[@]}" --out "$run/data.zarr"
if [ ! -f "$run/model/config.json" ]; then
  mkdir -p "$run/model"
  cp "$(python -c 'from wfm_sim.models.world_model import resolve_pretrained; print(resolve_pretrained("driving"))')"/{config.json,model.safetensors} "$run/model/"
fi
resume=()
[ -f "$run/model/train_state/backbone/state.json" ] && resume=(--resume)
wfm-sim train backbone --data "$run/data.zarr" --out "$run/model" --steps "$steps" --batch-size "$batch" --lr 2e-4 \
  --warmup 100 --device "$device" --eval-every 500 --save-every 250 "${resume[@]}"
wfm-sim evaluate "$run/model" --counterfactual --source carracing-4cam --horizon 16 --device "$device" \
  --out "$run/counterfactual" "${cf[@]}"
wfm-sim evaluate "$run/model" --counterfactual --source carracing-4cam --horizon 16 --mode sequential --no-probes \
  --device "$device" --out "$run/counterfactual_sequential" "${cf[@]}"
