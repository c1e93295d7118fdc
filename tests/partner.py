"""A stand-in for GitHub's secret-scanning partner program (contract §14):
a P-256 key pair, its public-keys file in GitHub's format, and signed
reports, made with ``cryptography`` the way GitHub's docs describe."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPORTS = "/v1/secret-scanning/reports"
TOKEN_TYPE = "keystile_api_key"  # the name a deployment registers its pattern under


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def keys_document(*keys: tuple[str, ec.EllipticCurvePrivateKey]) -> str:
    """GitHub's public-keys JSON for ``(identifier, private key)`` pairs."""
    entries = [
        {"key_identifier": identifier, "key": public_pem(key), "is_current": index == 0}
        for index, (identifier, key) in enumerate(keys)
    ]
    return json.dumps({"public_keys": entries})


@dataclass
class Partner:
    identifier: str = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def write_keys(self, path: Path) -> Path:
        path.write_text(keys_document((self.identifier, self.key)))
        return path

    def signature(self, body: bytes) -> str:
        return base64.b64encode(self.key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Github-Public-Key-Identifier": self.identifier,
            "Github-Public-Key-Signature": self.signature(body),
        }

    def report(self, *tokens: str, token_type: str = TOKEN_TYPE) -> tuple[bytes, dict[str, str]]:
        """A signed report of ``tokens``: (body, headers)."""
        items: list[dict[str, Any]] = [
            {
                "token": token,
                "type": token_type,
                "url": "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo/bar.txt",
                "source": "content",
            }
            for token in tokens
        ]
        body = json.dumps(items).encode()
        return body, self.headers(body)
