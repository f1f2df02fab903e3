"""The practitioner's tools: sanity checks, the initialization explorer, the learning-rate finder, sweeps, model statistics.

Built on training; imports anything below it, never reporting or the command line.
"""
