"""newsletter: build a weekly email digest from articles and rates, and deliver it once."""

__version__ = "0.1.0"
