#!/bin/bash
# before = main c633d05 (git archive in /tmp/subslice_main, this script's loop_holds.py copied in), after = branch subslice;
# alternating rounds, GC frozen as `syncref serve` does (ADR-0036)
cd /work/wt/subslice
ONLY=("idle" "Subscribe many" "Unsubscribe many" "Subscribe sync_stream" "Unsubscribe sync_stream" "OneOffQuery many")
out=docs/perf/session10/subslice${SUFFIX:+/$SUFFIX}
for round in ${ROUNDS:-1 2 3}; do
  for tree in before after; do
    if [ $tree = before ]; then dir=/tmp/subslice_main; else dir=/work/wt/subslice; fi
    echo "# $tree round $round $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/$tree-$round.txt
    PYTHONPATH=$dir/tests .venv/bin/python $dir/benchmarks/loop_holds.py --big 1 --many 30000 --streams 30000 --gc-freeze survivors --only "${ONLY[@]}" >> $out/$tree-$round.txt 2>&1
    echo "# end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/$tree-$round.txt
  done
done
