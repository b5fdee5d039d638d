"""Bazel support: BUILD generator, pytest runner, toolchain and stub repos."""
