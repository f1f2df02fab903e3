"""Training: the one LightningModule (Classifier), fitting it, run folders, checkpoints, ensembles, evaluation.

Imports zoo.core, zoo.data and zoo.monitoring; never tools, reporting or the command line.
"""
