"""Reusable parts of the federation scenarios: the test CA, Lattice servers, Matrix clients."""
