"""The secure-aggregation helper: the second, non-colluding aggregator (issue 13)."""
