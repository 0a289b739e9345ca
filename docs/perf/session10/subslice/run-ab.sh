#!/bin/bash
# syncref bench --server-code A/B: before = main c633d05 (/tmp/subslice_main), after = subslice (git archive in
# /tmp/subslice_after); rounds before, after, after, before; workloads fanout_100 and replay_gap, 2 runs each
cd /work/wt/subslice
out=docs/perf/session10/subslice
i=0
for tree in before after after before; do
  i=$((i + 1))
  if [ $tree = before ]; then dir=/tmp/subslice_main; else dir=/tmp/subslice_after; fi
  echo "# $tree round $i $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" > $out/ab-$i-$tree.txt
  .venv/bin/python -m adapters.cli bench --workloads fanout_100 replay_gap --repeats 2 --server-code $dir \
    --json $out/ab-$i-$tree.json >> $out/ab-$i-$tree.txt 2>&1
  echo "# end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/ab-$i-$tree.txt
done
