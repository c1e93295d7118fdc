"""The gateway (contract §7): keystile in front of the API it protects."""
