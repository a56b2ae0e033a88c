"""The data concentrator: polling, store-and-forward, uplink, control and the field CLI."""

__version__ = "0.1.0"
