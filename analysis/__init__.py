"""Results analysis: the tidy results table, confidence intervals over seeds, and figure replicas."""
