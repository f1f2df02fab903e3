"""zoo's built-in components, each module registered through the zoo.plugins entry-point group."""
