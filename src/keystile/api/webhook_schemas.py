"""Wire schemas of webhook endpoints and their delivery log (contract §13)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keystile.clock import rfc3339
from keystile.webhooks.models import (
    EVENT_NAMES,
    Delivery,
    DeliveryPage,
    EndpointPage,
    WebhookEndpoint,
)

EVENTS_DOC = 'Event types to send, or ["*"] for all: ' + ", ".join(EVENT_NAMES) + "."
URL_DOC = (
    "Where events are POSTed: https (http only with KEYSTILE_WEBHOOK_ALLOW_HTTP), "
    "at most 2,048 characters, no credentials or fragment, not resolving to a loopback, "
    "private, link-local or metadata address (unless KEYSTILE_WEBHOOK_ALLOW_PRIVATE)."
)


class CreateWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(description=URL_DOC)
    events: list[str] = Field(description=EVENTS_DOC, max_length=len(EVENT_NAMES) + 1)
    description: str | None = Field(None, description="At most 1,000 characters.")


class UpdateWebhookEndpointRequest(BaseModel):
    """Any of the fields, at least one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(None, description=URL_DOC)
    events: list[str] | None = Field(None, description=EVENTS_DOC, max_length=len(EVENT_NAMES) + 1)
    description: str | None = None
    disabled: bool | None = Field(
        None, description="true: no new deliveries and no attempts until set back to false."
    )

    def given(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class WebhookEndpointOut(BaseModel):
    id: str = Field(examples=["we_01JD3ZK4Q8Y6W2N5T7V9X1B3C5"])
    url: str
    events: list[str]
    description: str | None
    disabled: bool
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class CreatedWebhookEndpointOut(WebhookEndpointOut):
    secret: str = Field(description="The signing secret (whsec_…). Returned only in this response.")


class WebhookEndpointEnvelope(BaseModel):
    data: WebhookEndpointOut


class CreatedWebhookEndpointEnvelope(BaseModel):
    data: CreatedWebhookEndpointOut


class DeletedWebhookEndpointOut(WebhookEndpointOut):
    deleted: Literal[True] = True


class DeletedWebhookEndpointEnvelope(BaseModel):
    data: DeletedWebhookEndpointOut


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointOut]
    has_more: bool


class DeliveryOut(BaseModel):
    id: str = Field(examples=["whd_01JD3ZK4Q8Y6W2N5T7V9X1B3C5"])
    event_id: str = Field(description="The event's id: its body's id and Keystile-Event-Id.")
    type: str = Field(description="The event's type.")
    state: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    last_status_code: int | None = Field(description="The receiver's last HTTP status, if any.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")
    next_attempt_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="When the next attempt is due (pending deliveries only).",
    )
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    has_more: bool


def endpoint_fields(endpoint: WebhookEndpoint) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        disabled=endpoint.disabled,
        created_at=rfc3339(endpoint.created_at) or "",
        updated_at=rfc3339(endpoint.updated_at) or "",
    )


def endpoint_out(endpoint: WebhookEndpoint) -> WebhookEndpointEnvelope:
    return WebhookEndpointEnvelope(data=endpoint_fields(endpoint))


def created_endpoint_out(endpoint: WebhookEndpoint, secret: str) -> CreatedWebhookEndpointEnvelope:
    fields = endpoint_fields(endpoint).model_dump()
    return CreatedWebhookEndpointEnvelope(data=CreatedWebhookEndpointOut(secret=secret, **fields))


def deleted_endpoint_out(endpoint: WebhookEndpoint) -> DeletedWebhookEndpointEnvelope:
    fields = endpoint_fields(endpoint).model_dump()
    return DeletedWebhookEndpointEnvelope(data=DeletedWebhookEndpointOut(**fields))


def endpoint_list_out(page: EndpointPage) -> WebhookEndpointList:
    return WebhookEndpointList(
        data=[endpoint_fields(e) for e in page.endpoints], has_more=page.has_more
    )


def delivery_fields(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        type=delivery.type,
        state=delivery.state.value,
        attempt_count=delivery.attempt_count,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=rfc3339(delivery.next_attempt_at),
        created_at=rfc3339(delivery.created_at) or "",
    )


def delivery_list_out(page: DeliveryPage) -> DeliveryList:
    return DeliveryList(data=[delivery_fields(d) for d in page.deliveries], has_more=page.has_more)
