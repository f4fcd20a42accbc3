"""singerid: singer identification and verification with deep metric learning."""

__version__ = "0.1.0"

__all__ = ["__version__"]
