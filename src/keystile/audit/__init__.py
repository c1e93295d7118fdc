"""The audit log (contract §12): who changed what, written in the same
transaction as the change."""
