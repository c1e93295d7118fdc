"""The peers' own apps (bench/peers.py): each runs in its peer's venv, never
in keystile's, so it imports nothing from keystile or bench."""
