#!/bin/sh
# `bazel coverage` is not supported offline: see bazel/remote_coverage_tools.
exit 0
