"""tff-imbalance: federated learning under class imbalance, on TensorFlow Federated."""
