#!/bin/sh
# A setup task (`ready = "exit"`): what waits for it starts once it exits 0.
echo "preparing the data directory"
sleep 1
echo "prepared"
