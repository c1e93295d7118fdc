"""Storage interfaces and their adapters."""
