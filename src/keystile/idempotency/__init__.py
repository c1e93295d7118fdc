"""Idempotent POSTs (contract §6): safe retries that replay the first response."""
