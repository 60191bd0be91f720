#!/bin/sh
# A service that always fails, to show the start limit stopping a crash loop.
echo "crashing (pid $$)" >&2
exit 1
