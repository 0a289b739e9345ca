#!/bin/bash
# before = main 7e93300 (git archive in /tmp/rview_main), after = this branch; alternating rounds
cd /work/wt/rview
ONLY=("idle" "OneOffQuery 8 KiB" "OneOffQuery many" "OneOffQuery big" "OneOffQuery full scan" "POST /sql" "v3 frame of 4 OneOff")
out=docs/perf/session10/rview
for round in g1 g2; do
  for tree in before after; do
    if [ $tree = before ]; then dir=/tmp/rview_main; else dir=/work/wt/rview; fi
    echo "# $tree round $round $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/$tree-$round.txt
    PYTHONPATH=$dir/tests .venv/bin/python $dir/benchmarks/loop_holds.py --big 120 --many 30000 --gc-freeze survivors --only "${ONLY[@]}" >> $out/$tree-$round.txt 2>&1
    echo "# end $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/$tree-$round.txt
  done
done
