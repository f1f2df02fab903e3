"""Data as components see it: in-memory splits and batches, the DataModule, batch augmentation, test-time views.

Imports only zoo.core; data-set and augmentation plugins build on what is here.
"""
