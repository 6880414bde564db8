"""Bilevel and episodic meta-learning: SAMA and HeTRoM (no Ray in this package)."""
