#!/bin/sh
echo "hello from a rootless multi-stage build, made on $(uname -m)"
