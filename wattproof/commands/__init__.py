"""Command groups of the ``wattproof`` CLI, one module each; they parse arguments and call the packages."""
