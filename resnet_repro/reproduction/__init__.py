"""The papers' results from runs: the published numbers, reading run directories, the tables,
and the layer responses of [R1] figure 7."""
