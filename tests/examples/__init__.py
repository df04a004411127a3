"""Runnable examples of the pytest plugin; each file's docstring says what it shows."""
