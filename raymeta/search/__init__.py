"""Ray Tune adapter: the ScaML-GP searcher, meta-data sources and parallel GP fits."""
