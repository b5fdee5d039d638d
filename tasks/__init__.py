"""Entry points: absl-flag programs, wiring only."""
