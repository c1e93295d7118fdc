"""``create_app(settings)``: the one place where the service is wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from keystile.accounts.service import AccountService
from keystile.api.deps import Services
from keystile.api.idempotency import IdempotencyLayer
from keystile.api.management import create_management_app
from keystile.api.observability import Metrics, configure_logging
from keystile.api.pipeline import Endpoint, Pipeline, Router
from keystile.api.schemas import key_out
from keystile.api.verify import PATH as VERIFY_PATH
from keystile.api.verify import VerifyEndpoint
from keystile.audit.service import AuditLog
from keystile.clock import Clock, system_clock
from keystile.console.app import Console
from keystile.console.sessions import SessionStore
from keystile.errors import ConfigurationError
from keystile.faults import Faults
from keystile.gateway.client import UpstreamClient
from keystile.gateway.proxy import Proxy
from keystile.gateway.routes import RouteTable, load_routes
from keystile.idempotency import crypto
from keystile.idempotency.crypto import Keyring
from keystile.idempotency.locks import InFlight, LocalInFlight
from keystile.idempotency.service import IdempotencyService
from keystile.keys.models import Tier
from keystile.keys.service import KeyService
from keystile.keys.usage import UsageRecorder
from keystile.keys.verifier import KeyVerifier
from keystile.leaks.public_keys import PublicKeysFile
from keystile.leaks.public_keys import load as load_public_keys
from keystile.leaks.service import LeakService
from keystile.periodic import Periodic
from keystile.ratelimit.models import WindowCounter
from keystile.ratelimit.quota import DatabaseQuotas, Period, QuotaCounter, QuotaSeed
from keystile.ratelimit.service import RateLimiter
from keystile.settings import VERIFY_SCOPE, Settings
from keystile.storage.base import Storage
from keystile.storage.memory import MemoryQuotas, MemoryWindows
from keystile.storage.redis import RedisInFlight, RedisRevocations, RedisWindows, connect
from keystile.storage.redis_quotas import RedisQuotas
from keystile.storage.sql import migrate
from keystile.storage.sql.database import open_storage, scheme_of
from keystile.usage.meter import UsageMeter
from keystile.usage.service import UsageService
from keystile.webhooks.dispatcher import Dispatcher
from keystile.webhooks.limits import LimitEvents
from keystile.webhooks.outbox import Outbox
from keystile.webhooks.sender import Sender
from keystile.webhooks.service import WebhookService
from keystile.webhooks.urls import UrlPolicy

log = logging.getLogger("keystile")


def create_app(settings: Settings, *, clock: Clock = system_clock) -> Pipeline:
    """The ASGI application for ``settings``. Connects to nothing until started."""
    storage = open_storage(
        settings.database,
        timeout_seconds=settings.database_timeout_seconds,
        pool_size=settings.database_pool_size,
    )
    embedded = scheme_of(settings.database) == "sqlite"
    redis_client = (
        connect(settings.redis_url, settings.redis_reply_timeout_ms) if settings.redis_url else None
    )
    audit = AuditLog(clock=clock, retention_days=settings.audit_retention_days)
    keyring = keyring_for(settings)
    outbox = Outbox(
        lambda key, now: key_out(key, settings.key_prefix, now).model_dump(), clock=clock
    )
    keys = KeyService(storage, prefix=settings.key_prefix, audit=audit, events=outbox, clock=clock)
    webhooks = WebhookService(
        storage,
        keyring,
        policy=UrlPolicy(settings.webhook_allow_http, settings.webhook_allow_private),
        audit=audit,
        clock=clock,
    )
    limit_events = LimitEvents()
    accounts = AccountService(storage, audit=audit, clock=clock)
    usage = UsageRecorder(storage, settings.last_used_interval_seconds)
    usage_meter = UsageMeter(storage, flush_seconds=settings.usage_flush_seconds, clock=clock)
    usage_service = UsageService(
        storage, clock=clock, hourly_retention_days=settings.usage_hourly_retention_days
    )
    verifier = KeyVerifier(
        storage,
        prefix=settings.key_prefix,
        clock=clock,
        cache_size=settings.key_cache_size,
        # Without SQLite's change counter or a Redis feed, a cached key could
        # outlive its revocation on another instance by the TTL: keep it short.
        cache_ttl_seconds=settings.key_cache_ttl_seconds
        if embedded or redis_client
        else min(settings.key_cache_ttl_seconds, 1.0),
        usage=usage,
    )
    # Cached keys go stale when a change commits: in this process at once,
    # in the host's other processes through SQLite's shared counter, on other
    # instances through the Redis feed.
    storage.on_invalidated(verifier.invalidate)
    revocations = None if embedded else revocation_feed(settings, storage, verifier)
    in_flight: InFlight = LocalInFlight()
    if redis_client is not None:
        in_flight = RedisInFlight(
            redis_client,
            prefix=settings.redis_prefix,
            reply_timeout_ms=settings.redis_reply_timeout_ms,
        )
    idempotency = IdempotencyService(storage, keyring, in_flight, clock=clock)
    ratelimiter = RateLimiter(
        window_counter(settings, redis_client, clock),
        tiers={
            Tier.STANDARD: settings.limit("tier_standard"),
            Tier.HIGH: settings.limit("tier_high"),
            Tier.UNMETERED: None,
        },
        auth_failures=settings.limit("auth_failure_limit"),
        quotas=quota_counter(settings, redis_client, storage),
        quota_seed=_usage_recorded(storage, usage_meter),
        clock=clock,
        listener=limit_events,
    )
    dispatcher = Dispatcher(
        storage,
        webhooks,
        outbox,
        limit_events,
        Sender(webhooks.policy, max_connections=settings.webhook_concurrency),
        retry_hours=settings.webhook_retry_hours,
        retry_base_seconds=settings.webhook_retry_base_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        scan_seconds=settings.webhook_scan_seconds,
        concurrency=settings.webhook_concurrency,
        clock=clock,
    )
    services = Services(
        settings=settings,
        storage=storage,
        keys=keys,
        accounts=accounts,
        audit=audit,
        webhooks=webhooks,
        verifier=verifier,
        usage=usage,
        usage_meter=usage_meter,
        usage_service=usage_service,
        idempotency=idempotency,
        ratelimiter=ratelimiter,
        metrics=Metrics(),
        clock=clock,
        leaks=LeakService(storage, keys, prefix=settings.key_prefix),
        leak_keys=PublicKeysFile(settings.secret_scanning_keys),
        faults=Faults(settings.test_fault_point, settings.data_dir),
    )
    management = create_management_app(services)
    console = Console(services, keyring) if settings.console_enabled else None
    routes = load_routes(settings.routes, settings.catalog) if settings.routes else RouteTable([])
    upstreams = UpstreamClient()
    hot = {
        ("POST", VERIFY_PATH): Endpoint(
            name=VERIFY_PATH, app=VerifyEndpoint(services), permission=VERIFY_SCOPE
        )
    }

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await asyncio.to_thread(migrate.upgrade, settings.database)
        purger = Periodic(
            "purging idempotency records and old audit events, rolling up usage",
            settings.idempotency_purge_interval_seconds,
            lambda: purge_expired(
                idempotency,
                audit,
                usage_service,
                storage,
                dispatcher,
                webhooks,
                console.sessions if console else None,
            ),
        )
        usage.start()
        usage_meter.start()
        purger.start()
        dispatcher.start()
        if revocations is not None:
            revocations.start()
        # Everything allocated so far lives as long as the process: keep it
        # out of the cyclic collector's way (gen-2 pauses dominate p99).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if revocations is not None:
                await revocations.stop()
            await purger.stop()
            await dispatcher.stop()
            with contextlib.suppress(Exception):  # traffic events queued since the last write
                await limit_events.write(storage, outbox)
            await usage.stop()
            await usage_meter.stop()  # the last counts, while the database is open
            await ratelimiter.counter.close()
            if redis_client is not None:
                await redis_client.aclose()
            upstreams.close()
            await storage.close()

    pipeline = Pipeline(
        services=services,
        router=Router(management, hot, routes, Proxy(upstreams, settings.proxies), console),
        idempotency=IdempotencyLayer(idempotency, services.faults),
        lifespan=lifespan,
    )
    if console is not None:
        console.attach(pipeline)  # the console acts through the API (keystile.console.api)
    return pipeline


async def purge_expired(
    idempotency: IdempotencyService,
    audit: AuditLog,
    usage: UsageService,
    storage: Storage,
    dispatcher: Dispatcher | None = None,
    webhooks: WebhookService | None = None,
    console_sessions: SessionStore | None = None,
) -> None:
    """The background job: expired idempotency records (24 h), audit events
    past ``KEYSTILE_AUDIT_RETENTION_DAYS``, hourly usage past
    ``KEYSTILE_USAGE_HOURLY_RETENTION_DAYS`` rolled up into daily totals, and
    settled webhook deliveries older than 30 days, and webhook signing
    secrets re-encrypted under the current application key, and console
    sessions past their idle or absolute expiry."""
    await idempotency.purge()
    await audit.purge(storage)
    await usage.roll_up()
    if dispatcher is not None:
        await dispatcher.purge()
    if webhooks is not None:
        await webhooks.reencrypt()
    if console_sessions is not None:
        await console_sessions.purge()


def revocation_feed(
    settings: Settings, storage: Storage, verifier: KeyVerifier
) -> RedisRevocations | None:
    """With a shared database and Redis: publish every committed key change
    (revocation, update, rotation, suspension), evict what other instances
    change, and use the cache only while subscribed."""
    if settings.redis_url is None:
        return None

    async def evict(message: str) -> None:
        await verifier.invalidate(frozenset(message.split(",")))

    feed = RedisRevocations(
        connect(settings.redis_url, settings.redis_reply_timeout_ms, subscriber=True),
        prefix=settings.redis_prefix,
        reply_timeout_ms=settings.redis_reply_timeout_ms,
        retry_seconds=settings.key_cache_ttl_seconds,
        on_revoked=evict,
        on_resubscribed=verifier.clear,
    )

    async def publish(ids: frozenset[str]) -> None:
        await feed.publish(",".join(sorted(ids)))

    storage.on_invalidated(publish)
    verifier.cache_is_current = lambda: feed.live
    return feed


def window_counter(settings: Settings, redis_client: Redis | None, clock: Clock) -> WindowCounter:
    """Redis when configured (limits shared by every instance), else this process."""
    memory = MemoryWindows(clock)
    if redis_client is None:
        if settings.workers > 1:
            log.warning(
                "%d workers without KEYSTILE_REDIS_URL: each worker enforces rate limits "
                "on its own, so a key may get up to %d times its limit",
                settings.workers,
                settings.workers,
            )
        return memory
    return RedisWindows(
        redis_client,
        prefix=settings.redis_prefix,
        timeout_ms=settings.redis_timeout_ms,
        reply_timeout_ms=settings.redis_reply_timeout_ms,
        failure_mode=settings.redis_failure_mode,
        fallback=memory,
    )


def quota_counter(settings: Settings, redis_client: Redis | None, storage: Storage) -> QuotaCounter:
    """Where quotas are counted (contract §11): Redis when configured (every
    instance); else this process when it is the only worker; else the
    database, so that several workers of one host stay exact."""
    if redis_client is not None:
        return RedisQuotas(
            redis_client,
            prefix=settings.redis_prefix,
            timeout_ms=settings.redis_timeout_ms,
            reply_timeout_ms=settings.redis_reply_timeout_ms,
            failure_mode=settings.redis_failure_mode,
            fallback=MemoryQuotas(),
        )
    if settings.workers > 1:
        return DatabaseQuotas(storage)
    return MemoryQuotas()


def _usage_recorded(storage: Storage, meter: UsageMeter) -> QuotaSeed:
    """A quota counter's starting point (contract §11): what the usage records
    hold for its keys in the period, plus what this process has counted and
    not written yet. Read while no flush of this process is in progress, so
    no request is counted twice or missed."""

    async def seed(name: str, period: Period) -> int:
        async with meter.settled(), storage.reader() as uow:
            recorded = await uow.usage.used(name, period.start, period.end)
            return recorded + meter.pending_used(name, period.start, period.end)

    return seed


def keyring_for(settings: Settings) -> Keyring:
    """The application key: configured, or generated for the embedded default."""
    if settings.secret_key is not None:
        return Keyring.parse(settings.secret_key.get_secret_value())
    if scheme_of(settings.database) == "sqlite":
        return Keyring.parse(crypto.load_or_create(settings.data_dir))
    raise ConfigurationError(
        "KEYSTILE_SECRET_KEY must be set when the database is not the embedded SQLite "
        "(every instance needs the same key; make one with: keystile secret-key)"
    )


def check(settings: Settings) -> None:
    """Refuse to start on configuration that could only fail later (the routes
    file, the secret-scanning keys, the application key), with one clear message."""
    if settings.routes:
        load_routes(settings.routes, settings.catalog)
    if settings.secret_scanning_keys:
        load_public_keys(settings.secret_scanning_keys)
    keyring_for(settings)


def factory() -> Pipeline:
    """Entry point for uvicorn (``keystile serve``), in each worker process."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
