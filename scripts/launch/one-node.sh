#!/usr/bin/env bash
# Data-parallel training on one machine: one loom process per core group (CPU) through OpenMPI.
#   scripts/launch/one-node.sh NPROC RECIPE [key=value ...]
# Each process gets OMP_NUM_THREADS = cores / NPROC threads, bound to its own cores. The recipe's
# data.*.batch_size is the global batch (it must divide by NPROC); the result equals one process
# with that batch up to the order of floating-point sums. Rank 0 writes runs/NAME.
# (GPUs: one rank per GPU arrives with the CUDA trainer; until then ranks train on the CPU.)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NPROC RECIPE [key=value ...]" >&2; exit 2; }
nproc_req=$1; shift
root="$(cd "$(dirname "$0")/../.." && pwd)"
loom="${LOOM:-$root/build/bin/loom}"
cores=$(nproc)
threads=$(( cores / nproc_req > 0 ? cores / nproc_req : 1 ))
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
exec mpirun "${extra[@]}" -np "$nproc_req" --map-by "slot:PE=$threads" --bind-to core \
  -x OMP_NUM_THREADS="$threads" "$loom" train "$@"
