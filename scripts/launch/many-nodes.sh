#!/usr/bin/env bash
# Data-parallel training across machines with OpenMPI and a hostfile (one line per node:
# "node01 slots=8"). Every node must see the same loom binary, recipe and data paths (shared
# storage) and the run directory of rank 0.
#   scripts/launch/many-nodes.sh HOSTFILE PROCS_PER_NODE RECIPE [key=value ...]
# OpenMPI picks the fastest transport it finds (UCX over InfiniBand where present); set
# OMPI_MCA_btl_tcp_if_include=eth0 (or your interface) when nodes have several networks.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 HOSTFILE PROCS_PER_NODE RECIPE [key=value ...]" >&2; exit 2; }
hostfile=$1 ppn=$2; shift 2
root="$(cd "$(dirname "$0")/../.." && pwd)"
loom="${LOOM:-$root/build/bin/loom}"
nodes=$(grep -cve '^\s*$' -e '^\s*#' "$hostfile")
threads=${OMP_NUM_THREADS:-1}
exec mpirun --hostfile "$hostfile" -np $(( nodes * ppn )) --map-by "ppr:$ppn:node:PE=$threads" --bind-to core \
  -x OMP_NUM_THREADS="$threads" -x PATH -x LD_LIBRARY_PATH "$loom" train "$@"
