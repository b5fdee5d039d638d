"""Federated learning processes: client works, aggregators, algorithms, registry."""
