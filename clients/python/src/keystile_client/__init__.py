"""keystile-client: the Python client of keystile's API, and middleware that
protects your own ASGI, FastAPI or Django app with keystile keys.

``Client`` and ``AsyncClient`` cover every endpoint; errors are
``KeystileError`` subclasses (``keystile_client.errors``); results are the
dataclasses of ``keystile_client.models``.
"""

__version__ = "0.1.0"

from keystile_client.async_client import AsyncClient
from keystile_client.client import Client
from keystile_client.errors import ConnectionFailed, KeystileError
from keystile_client.models import (
    Account,
    ApiKey,
    AuditEvent,
    CreatedApiKey,
    CreatedWebhookEndpoint,
    Delivery,
    Page,
    Quota,
    RateLimitRule,
    UsageBucket,
    Verification,
    WebhookEndpoint,
    Window,
)
from keystile_client.retry import RetryPolicy

__all__ = [
    "Account", "ApiKey", "AsyncClient", "AuditEvent", "Client", "ConnectionFailed",
    "CreatedApiKey", "CreatedWebhookEndpoint", "Delivery", "KeystileError", "Page",
    "Quota", "RateLimitRule", "RetryPolicy", "UsageBucket", "Verification",
    "WebhookEndpoint", "Window", "__version__",
]  # fmt: skip
