"""The management API's routes."""
