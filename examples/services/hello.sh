#!/bin/sh
# A one-shot service: says hello once and exits successfully.
echo "hello from pid $$, running as uid $(id -u) in $(pwd)"
