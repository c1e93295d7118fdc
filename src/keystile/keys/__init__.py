"""API keys: the token format, the key model and the services that issue and check keys."""
