"""Rate limits (contract §5): per key by tier, and per address for failed authentication."""
