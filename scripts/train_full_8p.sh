#!/usr/bin/env bash
# VGG16 on the 8 devices of one node, one spawned process each, 90 epochs (the guide reports top-1 72.95):
#   bash scripts/train_full_8p.sh --data_path=shards/ [--batch_size=256 (the node's)] [--output_dir=DIR] [flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data_path="" batch_size=$BATCH_SIZE output_dir=runs/train_full_8p
parse_options data_path batch_size output_dir -- "$@"
require_data_path
run_trainer "${VGG16_RECIPE[@]}" --multiprocessing-distributed --device-list "$EIGHT_DEVICES"
print_final_lines train
