"""Testing tools for backend and plugin authors."""
