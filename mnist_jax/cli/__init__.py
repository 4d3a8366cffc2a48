"""Command-line front ends: `python -m mnist_jax.cli.<train|predict|prepare_data>`."""
