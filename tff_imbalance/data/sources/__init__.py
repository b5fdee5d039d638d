"""Sources of real examples: idx files (MNIST format), LEAF JSON, TFF's EMNIST
sqlite, tfds, embedded MNIST, the shipped FEMNIST sample."""
