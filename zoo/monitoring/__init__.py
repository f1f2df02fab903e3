"""Watching a run: training monitors (activations, update ratios, divergence), metrics, W&B logging and its offline files.

Imports zoo.core and zoo.data only, so training and components can both use it.
"""
