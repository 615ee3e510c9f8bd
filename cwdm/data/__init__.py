"""Data: case folders, NIfTI reading and writing, preprocessing, datasets, label maps and the inputs
of a unified network."""
