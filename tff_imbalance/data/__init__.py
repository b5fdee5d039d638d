"""Data layer: sources, profiles, partitions, statistics and TFF ClientData."""
