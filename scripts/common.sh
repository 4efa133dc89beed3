# Sourced by the VGG16 guide's scripts (Ascend ModelZoo's names and options): the recipe, the option parsing, the
# trainer's command and the result lines those scripts end with. Not a script to run by itself.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The checkout's virtualenv when it has one (make's), else python3 from PATH; $PYTHON overrides both.
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# torchvision's VGG recipe as the guide trains it: global batch 256, lr 0.01, x0.1 every 30 epochs, 90 epochs, fp16 AMP.
VGG16_RECIPE=(--arch vgg16 --opt-level O1 --lr 0.01 --lr-schedule step --epochs 90 --seed 1 --eval_freq 1)
BATCH_SIZE=256              # with --multiprocessing-distributed, the node's: each device trains on 256 / 8
EIGHT_DEVICES=0,1,2,3,4,5,6,7
PERFORMANCE_STEPS=1000      # the performance scripts time this many steps, then stop

# parse_options NAME... -- ARG...: each --NAME=VALUE sets the shell variable NAME; every other ARG goes, in order,
# into TRAINER_ARGS, which the trainer receives last (so a flag there overrides the script's own).
parse_options() {
    local names=() arg name taken
    while [[ $1 != -- ]]; do names+=("$1"); shift; done
    shift
    TRAINER_ARGS=()
    for arg in "$@"; do
        taken=""
        for name in "${names[@]}"; do
            if [[ $arg == --$name=* ]]; then
                printf -v "$name" '%s' "${arg#*=}"
                taken=1
            fi
        done
        [[ -n $taken ]] || TRAINER_ARGS+=("$arg")
    done
}

require_data_path() {
    if [[ -z ${data_path:-} ]]; then
        echo "$(basename "$0"): --data_path=DIR is required (python -m prep.imagenet --src ILSVRC2012 --out DIR" \
            "writes one)" >&2
        exit 2
    fi
}

# run_trainer FLAG...: python -m trainer on the guide's data, batch and output dir, then FLAG..., then TRAINER_ARGS;
# its output is also appended to $output_dir/train.log (a rerun, which resumes, adds to it). Returns the trainer's
# exit status: with `set -e` a stopped run (75: checkpointed on a signal, run the script again) ends the script so.
# A stop signal sent to the script (SLURM's, a `kill`) goes on to the trainer, which checkpoints and exits; a
# terminal's Ctrl-C reaches both, and the trainer takes the two copies for one. The tee ignores them, so it logs
# what the trainer says while it stops.
run_trainer() {
    mkdir -p "$output_dir"
    local trainer logger status
    exec 3>&1 4>&2
    exec > >(trap '' INT TERM USR1; exec tee -a "$output_dir/train.log") 2>&1
    logger=$!
    # `trap -`: a background command of a script ignores SIGINT unless told otherwise.
    (trap - INT QUIT; PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -u -m trainer \
        --data "$data_path" --batch-size "$batch_size" --output-dir "$output_dir" "$@" "${TRAINER_ARGS[@]}") &
    trainer=$!
    trap 'kill -TERM "$trainer" 2>/dev/null || true' TERM
    trap 'kill -INT "$trainer" 2>/dev/null || true' INT
    trap 'kill -USR1 "$trainer" 2>/dev/null || true' USR1
    while kill -0 "$trainer" 2>/dev/null; do
        wait "$trainer" || true  # returns early on each signal trapped above
    done
    status=0
    wait "$trainer" || status=$?
    trap - TERM INT USR1
    exec 1>&3 2>&4 3>&- 4>&-
    wait "$logger" || true  # every line in train.log and on the screen before what the script prints next
    return "$status"
}

# print_final_lines train|eval: the lines Ascend ModelZoo's scripts end with, from the run's report.json (a line
# whose figure the run did not measure, such as the accuracy of a run stopped before its evaluation, is left out).
print_final_lines() {
    echo "------------------ Final result ------------------"
    "$PYTHON" - "$output_dir/report.json" "$1" <<'EOF'
import json
import sys

path, kind = sys.argv[1:]
with open(path) as file:
    report = json.load(file)
lines = {"train": {"Final Performance images/sec": "train_fps_mean", "Final Train Accuracy": "acc1_best",
                   "E2E Training Duration sec": "training_time"},
         "eval": {"Final Eval Accuracy": "acc1_best", "E2E Eval Duration sec": "eval_time"}}[kind]
for label, key in lines.items():
    if report.get(key) is not None:
        print(f"{label} : {report[key]}")
EOF
}
