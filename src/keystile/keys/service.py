"""Issuing, reading and revoking keys: the rules of contract §4."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keystile import clock as clocks
from keystile.errors import (
    DuplicateName,
    FieldProblem,
    InsufficientPermissions,
    NotFound,
    PlanRestricted,
    ValidationFailed,
)
from keystile.keys import tokens
from keystile.keys.ids import is_account_id, is_key_id, new_account_id, new_key_id
from keystile.keys.models import (
    Account,
    ApiKey,
    IssuedKey,
    KeyPage,
    KeyStatus,
    NewKey,
    Plan,
    Tier,
)
from keystile.keys.validation import check_name, name_key
from keystile.storage.base import Storage, UnitOfWork

RevocationListener = Callable[[str], Awaitable[None]]


class KeyService:
    def __init__(
        self,
        storage: Storage,
        *,
        prefix: str,
        clock: clocks.Clock = clocks.system_clock,
    ) -> None:
        self._storage = storage
        self._prefix = prefix
        self._clock = clock
        self._revocation_listeners: list[RevocationListener] = []

    def on_revoke(self, listener: RevocationListener) -> None:
        """Call ``listener(key_id)`` after each revocation has committed."""
        self._revocation_listeners.append(listener)

    def now(self) -> int:
        return clocks.now_micros(self._clock)

    async def create_account(self, name: str, plan: Plan = Plan.STANDARD) -> Account:
        clean, problems = check_name(name)
        if problems:
            raise ValidationFailed("The account name is invalid.", problems)
        account = Account(
            id=new_account_id(),
            name=clean,
            plan=plan,
            created_at=clocks.whole_seconds(self.now()),
        )
        async with self._storage.transaction() as uow:
            await uow.accounts.insert(account)
        return account

    async def issue(
        self, uow: UnitOfWork, account_id: str, new: NewKey, caller: ApiKey | None
    ) -> IssuedKey:
        """Create a key in ``uow``'s transaction and return it with its secret.

        ``caller`` is the key making the request (``None`` for the admin CLI):
        no key can grant a permission it does not hold itself.
        """
        if caller is not None:
            missing = sorted(set(new.permissions) - set(caller.permissions))
            if missing:
                raise InsufficientPermissions(
                    "A key cannot grant permissions it does not hold: " + ", ".join(missing)
                )
            check_lifetime(new.expires_at, caller)
        # The account is read only when something depends on it: its plan
        # (unmetered), or its existence (the CLI names it; a caller's own
        # account always exists). Fewer statements in the write transaction.
        if caller is None or new.rate_limit_tier is Tier.UNMETERED:
            account = await uow.accounts.get(account_id) if is_account_id(account_id) else None
            if account is None:
                raise NotFound(f"No account {account_id!r}.")
            if new.rate_limit_tier is Tier.UNMETERED and account.plan is not Plan.ENTERPRISE:
                raise PlanRestricted("The unmetered tier is only available on the enterprise plan.")

        now = self.now()
        secret = tokens.generate(self._prefix)
        key = ApiKey(
            id=new_key_id(),
            account_id=account_id,
            name=new.name,
            description=new.description,
            permissions=new.permissions,
            rate_limit_tier=new.rate_limit_tier,
            expires_at=new.expires_at,
            created_at=clocks.whole_seconds(now),
        )
        normalised = name_key(new.name)
        digest = tokens.digest(secret)
        try:
            await uow.keys.insert(key, digest, normalised)
        except DuplicateName:
            # The unique index cannot see the clock: an expired key still
            # holds its name until someone wants it. Release it and try again,
            # in the same transaction (a live holder still wins: 409).
            await uow.keys.release_expired_name(account_id, normalised, now)
            await uow.keys.insert(key, digest, normalised)
        return IssuedKey(key=key, secret=secret)

    async def get(self, account_id: str | None, key_id: str) -> ApiKey:
        """The key; another account's key is :class:`NotFound` like a missing one."""
        async with self._storage.reader() as uow:
            return await _existing(uow, account_id, key_id)

    async def list(
        self,
        account_id: str,
        *,
        limit: int = 20,
        status: KeyStatus | None = None,
        starting_after: str | None = None,
    ) -> KeyPage:
        async with self._storage.reader() as uow:
            cursor = None
            if starting_after is not None:
                cursor = await uow.keys.get(account_id, starting_after)
                if cursor is None:
                    raise ValidationFailed(
                        "The query string is invalid.",
                        [FieldProblem("starting_after", "is not a key of this account")],
                    )
            return await uow.keys.list(
                account_id, now=self.now(), limit=limit, status=status, starting_after=cursor
            )

    async def revoke(self, account_id: str | None, key_id: str) -> ApiKey:
        """Revoke (idempotently: the first ``revoked_at`` stays) and tell the listeners."""
        async with self._storage.transaction() as uow:
            await _existing(uow, account_id, key_id)
            await uow.keys.revoke(key_id, self.now())
            revoked = await uow.keys.get(account_id, key_id)
        assert revoked is not None
        for listener in self._revocation_listeners:
            await listener(key_id)
        return revoked


def check_lifetime(expires_at: int | None, caller: ApiKey | None) -> None:
    """A key cannot outlive the key that made it (contract §4; the rule Vault
    applies to child tokens): when ``caller`` expires, ``expires_at`` must be
    set and not later. ``None`` (the CLI, an operator key) is unbounded.

    Raises :class:`InsufficientPermissions` naming ``expires_at``.
    """
    if caller is None or caller.expires_at is None:
        return
    if expires_at is not None and expires_at <= caller.expires_at:
        return
    latest = clocks.rfc3339(caller.expires_at)
    raise InsufficientPermissions(
        f"A key that expires cannot create a key that outlives it: expires_at must be "
        f"set and no later than {latest}, when the calling key expires.",
        [FieldProblem("expires_at", f"must be set and no later than {latest}")],
    )


async def _existing(uow: UnitOfWork, account_id: str | None, key_id: str) -> ApiKey:
    key = await uow.keys.get(account_id, key_id) if is_key_id(key_id) else None
    if key is None:
        raise NotFound(f"No such key: {key_id[:64]!r}.")
    return key
