"""The admin CLI (contract §1, §9): ``keystile serve`` and the commands that
work directly on the configured database, which is how an account, its
first admin key and the operator's keys are made.

One module per noun (``accounts``, ``keys``, ``operator_keys``, ``server``);
``--json`` prints exactly the body the HTTP API returns for the same
operation, and a mistake reads exactly as the API words it.
"""

from keystile.cli.app import app, main

__all__ = ["app", "main"]
