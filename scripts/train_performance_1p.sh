#!/usr/bin/env bash
# VGG16's images/s on one device: the full recipe, stopped after PERFORMANCE_STEPS steps:
#   bash scripts/train_performance_1p.sh --data_path=shards/ [--batch_size=256] [--output_dir=DIR] [trainer flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data_path="" batch_size=$BATCH_SIZE output_dir=runs/train_performance_1p
parse_options data_path batch_size output_dir -- "$@"
require_data_path
run_trainer "${VGG16_RECIPE[@]}" --stop-step-num "$PERFORMANCE_STEPS"
print_final_lines train
