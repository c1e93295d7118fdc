"""The browser console at /console (contract §16)."""
