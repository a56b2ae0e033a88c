"""Meter-facing protocols (sans-I/O codecs) and the transports that carry them."""
