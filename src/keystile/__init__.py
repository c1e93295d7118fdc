"""keystile: a self-hostable API-key service."""

# The one place the version is written: pyproject.toml reads it from here
# (``[tool.setuptools.dynamic]``), ``keystile --version`` and /openapi.json print it.
__version__ = "0.1.0"
