#!/usr/bin/env bash
# VGG16's images/s on several nodes of 8 devices, one spawned process per device; run it on every node:
#   bash scripts/train_performance_multinodes.sh --data_path=shards/ --batch_size=256 (each node's) --nnodes=2
#       --node_rank=0|1... --local_addr=THIS_NODE_IP --master_addr=NODE_0_IP [--master_port=PORT] [--output_dir=DIR]
#       [trainer flags...]
# Node 0 holds rank 0: the report and the final lines are there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

data_path="" batch_size=$BATCH_SIZE output_dir=runs/train_performance_multinodes
nnodes=1 node_rank=0 local_addr="" master_addr=127.0.0.1 master_port=""
parse_options data_path batch_size output_dir nnodes node_rank local_addr master_addr master_port -- "$@"
require_data_path
if [[ -n $master_port ]]; then
    export MASTER_PORT=$master_port  # --addr meets there (default: the trainer's)
fi
if [[ -n $local_addr ]]; then
    # --local_addr plays HCCL_IF_IP's part: gloo and nccl take the name of the interface holding that address.
    interface=$(ip -o addr show 2>/dev/null |
                awk -v addr="$local_addr" '{split($4, a, "/")} a[1] == addr {print $2; exit}' || true)
    if [[ -z $interface ]]; then
        echo "$(basename "$0"): --local_addr=$local_addr: no network interface of this node holds it (ip addr)" >&2
        exit 2
    fi
    export GLOO_SOCKET_IFNAME=$interface NCCL_SOCKET_IFNAME=$interface
fi
run_trainer "${VGG16_RECIPE[@]}" --multiprocessing-distributed --device-list "$EIGHT_DEVICES" \
    --world-size "$nnodes" --rank "$node_rank" --addr "$master_addr" --stop-step-num "$PERFORMANCE_STEPS"
if [[ $node_rank == 0 ]]; then
    print_final_lines train
else
    echo "node $node_rank done; rank 0's report and final lines are on node 0"
fi
