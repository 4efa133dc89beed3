#!/usr/bin/env bash
# Top-1/top-5 of a checkpoint over the validation set, on the 8 devices of one node:
#   bash scripts/train_eval_8p.sh --data_path=shards/ [--resume=runs/train_full_8p/model_best.pth] [--batch_size=256]
#       [--output_dir=DIR] [trainer flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data_path="" batch_size=$BATCH_SIZE output_dir=runs/train_eval_8p resume=runs/train_full_8p/model_best.pth
parse_options data_path batch_size output_dir resume -- "$@"
require_data_path
run_trainer "${VGG16_RECIPE[@]}" --multiprocessing-distributed --device-list "$EIGHT_DEVICES" -e --resume "$resume"
print_final_lines eval
