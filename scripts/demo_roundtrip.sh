#!/usr/bin/env bash
# A round trip through the REST API with the attrivue-client CLI:
#   demo data set -> upload -> a short training run -> follow it
#   -> attribution maps for the test split -> download them.
#
# Usage:  scripts/demo_roundtrip.sh [OUT_DIR]        (default: ./demo-roundtrip)
#
# Needs a running server (`attrivue serve`) and, on this machine, the attrivue package
# (`pip install -e .`: it provides `attrivue-client` and `python -m worker.demo`).
#
# Environment:
#   ATTRIVUE_URL        the server (default http://127.0.0.1:8000)
#   ATTRIVUE_TOKEN      a bearer token; without one the script logs in with
#   ATTRIVUE_USERNAME   ... this user
#   ATTRIVUE_PASSWORD   ... and this password (asked for when unset)
#   ATTRIVUE_PROJECT    project id of the new dataset (default: your project "demo",
#                       created when you have none of that name)
#   DEMO_DATA           folder of the demo data set (default OUT_DIR/data; reused if present)
#   DEMO_SUBJECTS       demo subjects, half healthy, half with lesions (default 8)
#   DEMO_EPOCHS         training epochs (default 2)
#   DEMO_GRID           working grid of the run (default "24, 28, 24": quick on a CPU)
#   DEMO_IG_STEPS       Integrated Gradients steps (default 16)
#   PYTHON              the Python that has the attrivue package (default: python3)
#
# Every command prints ids on stdout and progress on stderr; the script stops at the first
# failure (a refused request, a failed job) with a non-zero exit status.
set -euo pipefail

OUT_DIR=${1:-demo-roundtrip}
PYTHON=${PYTHON:-python3}
DEMO_DATA=${DEMO_DATA:-$OUT_DIR/data}
DEMO_SUBJECTS=${DEMO_SUBJECTS:-8}
DEMO_EPOCHS=${DEMO_EPOCHS:-2}
DEMO_GRID=${DEMO_GRID:-24, 28, 24}
DEMO_IG_STEPS=${DEMO_IG_STEPS:-16}
CLIENT=(attrivue-client)
if [ ! -t 2 ]; then CLIENT+=(--no-progress); fi  # progress bars only on a terminal

step() { printf '\n== %s\n' "$*" >&2; }

mkdir -p "$OUT_DIR"

step "1. demo data set: $DEMO_SUBJECTS subjects in $DEMO_DATA"
"$PYTHON" -m worker.demo "$DEMO_DATA" --subjects "$DEMO_SUBJECTS"

if [ -z "${ATTRIVUE_TOKEN:-}" ]; then
    step "2. log in to ${ATTRIVUE_URL:-http://127.0.0.1:8000} as ${ATTRIVUE_USERNAME:?set ATTRIVUE_USERNAME or ATTRIVUE_TOKEN}"
    # --print: the token lives in this script's environment only, not in ~/.config/attrivue.
    ATTRIVUE_TOKEN=$("${CLIENT[@]}" login --print --username "$ATTRIVUE_USERNAME")
    export ATTRIVUE_TOKEN
else
    step "2. using the token in ATTRIVUE_TOKEN"
fi

step "3. upload"
PROJECT_ID=${ATTRIVUE_PROJECT:-$("${CLIENT[@]}" project demo)}
DATASET_ID=$("${CLIENT[@]}" upload "$DEMO_DATA" --project "$PROJECT_ID" \
    --name "demo $(date +%Y-%m-%dT%H:%M:%S)")
echo "dataset $DATASET_ID in project $PROJECT_ID" >&2

step "4. train a short run"
CONFIG=$OUT_DIR/run.yaml
cat > "$CONFIG" <<YAML
# A RunConfig (attrivue_core/configs.py): a small network on a coarse grid, a few epochs.
network: small_cnn
loss_setting: lc_only
epochs: $DEMO_EPOCHS
batch_size: 2
grid: [$DEMO_GRID]
val_attribution: false
seed: 1
YAML
RUN_ID=$("${CLIENT[@]}" train --dataset "$DATASET_ID" --name "demo round trip" --config "$CONFIG")
echo "run $RUN_ID" >&2

step "5. follow the training job"
"${CLIENT[@]}" follow --run "$RUN_ID"

step "6. Integrated Gradients for the test split"
JOB_IDS=$("${CLIENT[@]}" attribute --run "$RUN_ID" --split test \
    --params "{\"steps\": $DEMO_IG_STEPS, \"internal_batch_size\": 8}")
# shellcheck disable=SC2086  # one job id per word
"${CLIENT[@]}" follow $JOB_IDS

step "7. download the maps"
"${CLIENT[@]}" fetch --run "$RUN_ID" "$OUT_DIR/maps" >/dev/null
cat "$OUT_DIR/maps/maps.csv" >&2
echo "run $RUN_ID: $(echo $JOB_IDS | wc -w) maps in $OUT_DIR/maps" >&2
