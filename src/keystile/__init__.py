"""keystile: a self-hostable API-key service."""

__version__ = "0.1.0"
