"""Training a network: the loop, its schedule, checkpoints, records, the ranks of a
distributed run, the device's settings, and the run directory's files."""
