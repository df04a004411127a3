"""Amplitude's mapping rules in plain Python: no HTTP, no SQL."""
