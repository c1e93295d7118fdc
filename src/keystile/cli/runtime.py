"""What every admin command runs on: the settings, the migrated database and
the services, wired here (and in ``create_app``) and nowhere else.

The CLI acts as the operator: its changes are audited with the ``cli`` actor
(the services' default origin) and are bounded by the domain rules alone,
never by a calling key.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from keystile.api.wording import sentence
from keystile.settings import Settings

if TYPE_CHECKING:
    from keystile.accounts.service import AccountService
    from keystile.keys.operators import OperatorKeys
    from keystile.keys.service import KeyService
    from keystile.storage.base import Storage

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    storage: Storage
    keys: KeyService
    accounts: AccountService
    operator_keys: OperatorKeys


class ConfigurationError(Exception):
    """A ``KEYSTILE_*`` variable is invalid; the message names every one."""


def settings() -> Settings:
    """The configuration from the environment; raises :class:`ConfigurationError`."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def _problem(error: Any) -> str:
    """One setting's problem, naming its variable once."""
    text = sentence(error)
    if not error["loc"]:
        return text
    variable = "KEYSTILE_" + "_".join(str(part) for part in error["loc"]).upper()
    return text if variable in text else f"{variable}: {text}"


def run(work: Callable[[Services], Awaitable[T]]) -> T:
    """Migrate the configured database, run ``work`` with the services, close."""
    # Imported here: the database layers take most of a second to import,
    # which `--help`, `--version` and every Tab of shell completion skip.
    from keystile.accounts.service import AccountService
    from keystile.api.schemas import key_out
    from keystile.audit.service import AuditLog
    from keystile.keys.operators import OperatorKeys
    from keystile.keys.service import KeyService
    from keystile.storage.sql import migrate
    from keystile.storage.sql.database import open_storage
    from keystile.webhooks.outbox import Outbox

    config = settings()
    migrate.upgrade(config.database)

    async def main() -> T:
        storage = open_storage(config.database, timeout_seconds=config.database_timeout_seconds)
        audit = AuditLog(retention_days=config.audit_retention_days)
        services = Services(
            settings=config,
            storage=storage,
            # Key changes made here are announced to webhooks like the API's:
            # the server delivers them (contract §13).
            keys=KeyService(
                storage,
                prefix=config.key_prefix,
                audit=audit,
                events=Outbox(lambda key, now: key_out(key, config.key_prefix, now).model_dump()),
            ),
            accounts=AccountService(storage, audit=audit),
            operator_keys=OperatorKeys(storage, prefix=config.key_prefix, audit=audit),
        )
        try:
            return await work(services)
        finally:
            await storage.close()

    return asyncio.run(main())
