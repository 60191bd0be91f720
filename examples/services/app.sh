#!/bin/sh
# Requires the database: steward starts it only once the database said READY=1.
echo "app: the database is ready, serving"
exec sleep 100000
