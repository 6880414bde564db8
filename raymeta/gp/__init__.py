"""ScaML-GP: scalable meta-learning with Gaussian processes (no Ray in this package)."""
