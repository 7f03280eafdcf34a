"""Readers that turn each supported on-disk layout into the one dataset table."""
