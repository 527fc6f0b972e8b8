#!/bin/bash
# dpa3-al train, committee of 4 on the AL benchmark's Cu-Au frames, 400 steps: the old default (--parallel 1)
# against the new auto (parallel 0 -> one process per core, stacks of 2, one thread each), side by side in one run
# usage: bash bench/cli_parallel.sh TRAIN.yaml WORKDIR   (TRAIN.yaml: a train config with a committee, e.g. the
#        train section of a bench_al.py run config with data.systems set to its init data + a dataset)
set -e
cfg=$(realpath "$1"); mkdir -p "$2"; cd "$2"
for p in 1 0; do
  rm -rf out-p$p
  s=$(date +%s.%N)
  dpa3-al -q train "$cfg" -o out-p$p --parallel $p > log-p$p.txt 2>&1
  e=$(date +%s.%N)
  echo "parallel $p: $(echo "$e - $s" | bc) s"
done
