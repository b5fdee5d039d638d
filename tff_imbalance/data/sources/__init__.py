"""Sources of real examples: LEAF JSON, TFF's EMNIST sqlite, tfds, embedded MNIST."""
