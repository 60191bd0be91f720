#!/bin/sh
# A long-running service that exits after N ticks, to show keep_alive restarting it.
n=${1:-3}
i=1
while [ "$i" -le "$n" ]; do
    echo "tick $i/$n (pid $$)"
    sleep 1
    i=$((i + 1))
done
echo "done ticking; exiting so steward restarts me"
