"""Distillation (FreD): parameterisation, objectives, loop. This package knows nothing about HDF5."""
