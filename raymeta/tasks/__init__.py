"""Task data and task families for meta-learning (no Ray in this package)."""
