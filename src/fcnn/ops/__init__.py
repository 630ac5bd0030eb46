"""Kernels on bare arrays and ints: no params dicts, no caches, no cfg objects."""
