"""Ray Train adapter: per-worker loops for SAMA and HeTRoM on TorchTrainer."""
