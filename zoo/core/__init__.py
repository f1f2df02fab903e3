"""The component system: registries and their catalog, plugin discovery, recipes, building, errors, file helpers.

Imports nothing else from zoo: everything else, components included, builds on it.
"""
