"""Leak reports from a secret-scanning partner program (contract §14).

``public_keys`` checks that a report was signed by the partner (GitHub's
ECDSA P-256 scheme); ``service`` decides each reported token and revokes the
live keys among them. No web or database code here: storage through the
Protocols of ``keystile.storage.base``.
"""
