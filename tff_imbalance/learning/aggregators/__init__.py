"""Aggregation factories of this project (TFF `AggregationProcess` builders)."""
