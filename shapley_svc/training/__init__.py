"""Meta-training: the synthetic prior, labels from the reference engine, the artifact."""
