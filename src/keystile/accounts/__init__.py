"""Accounts: the operator's customers (contract §9)."""
