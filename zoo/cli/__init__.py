"""The ``zoo`` command line: ``main`` parses and dispatches; each bigger command has a module of its own.

The top of the house: it may import everything, and nothing in zoo imports it.
"""
