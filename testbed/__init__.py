"""specnet testbed: emulated wireless edge networks for distributed speculative decoding."""

__version__ = "0.1.0"
