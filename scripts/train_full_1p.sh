#!/usr/bin/env bash
# VGG16 on one device, 90 epochs (the guide reports top-1 73.39):
#   bash scripts/train_full_1p.sh --data_path=shards/ [--batch_size=256] [--output_dir=DIR] [trainer flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data_path="" batch_size=$BATCH_SIZE output_dir=runs/train_full_1p
parse_options data_path batch_size output_dir -- "$@"
require_data_path
run_trainer "${VGG16_RECIPE[@]}"
print_final_lines train
