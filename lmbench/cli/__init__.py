"""Console scripts: lmbench (the Hydra app) and lmbench-plugins."""
