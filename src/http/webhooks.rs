//! Webhook endpoints (admin only): create, list, show, update, delete,
//! rotate the secret; their deliveries, one sent again, every failed one
//! since an instant sent again. Delivery itself is the worker's
//! ([`crate::events::worker`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Body, Ids, Key, NoQuery, Q};
use super::{AppState, created_at};
use crate::domain::event::EventType;
use crate::domain::view::Page;
use crate::events::endpoint::EndpointUrl;
use crate::events::secret::Secret;
use crate::ledger::webhook::{
    AttemptList, Changed, DeliveryStatus, Endpoint, EndpointChange, EndpointView, KEY_SCOPE, MAX_ENDPOINTS,
    OLD_SECRET_SIGNS_FOR, check_description, check_types,
};
use crate::ledger::{Keyed, RequestKey, Store};

/// The webhook routes, each with its OpenAPI operation.
pub fn routes<S: Store>() -> OpenApiRouter<AppState<S>> {
    OpenApiRouter::default()
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(show, update, delete))
        .routes(utoipa_axum::routes!(rotate_secret))
        .routes(utoipa_axum::routes!(deliveries))
        .routes(utoipa_axum::routes!(attempts))
        .routes(utoipa_axum::routes!(redeliver))
        .routes(utoipa_axum::routes!(recover))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpointBody {
    /// Where events are POSTed: http or https, at most 2,048 characters.
    #[schema(pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s]+$", max_length = 2048)]
    pub url: String,
    /// The event types to receive; absent: all of them, present and future.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatchBody {
    #[schema(pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s]+$", max_length = 2048)]
    pub url: Option<String>,
    /// The event types to receive; null: all of them.
    #[serde(default, deserialize_with = "crate::domain::account::double_option::deserialize")]
    #[schema(value_type = Option<Vec<String>>)]
    pub events: Option<Option<Vec<String>>>,
    /// Re-enabling an endpoint sends what happened meanwhile, in order.
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

/// An endpoint with its secret: shown once, at creation and rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_` and base64: the key receivers verify signatures with.
    pub secret: String,
    /// Until when the previous secret also signs (after a rotation).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub old_secret_expires_at: Option<Timestamp>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook endpoint {id}"))
}

fn url_of(text: &str) -> Result<String, ApiError> {
    EndpointUrl::parse(text).map(|u| u.as_str().to_string()).map_err(|e| ApiError::invalid(e.to_string()))
}

fn types_of(names: &[String]) -> Result<Vec<EventType>, ApiError> {
    check_types(names).map_err(|e| ApiError::invalid(e.to_string()))
}

fn description_of(text: &str) -> Result<String, ApiError> {
    check_description(text).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn stored<S: Store>(st: &AppState<S>, id: &str) -> Result<Endpoint, ApiError> {
    st.ledger.store().endpoint(id.to_string()).await?.ok_or_else(|| not_found(id))
}

/// The request's `Idempotency-Key`, bound to the request: its method,
/// path and body (API.md: the same key with another request is a
/// conflict).
fn request_key(key: Key, method: &str, path: &str, body: &impl Serialize) -> Option<RequestKey> {
    let body = serde_json::to_string(body).unwrap_or_default();
    let request = format!("{method} {path} {body}");
    key.0.map(|key| RequestKey { scope: KEY_SCOPE, key, request, at: super::system_now() })
}

/// Makes the change; `None` when there was nothing to change (no such
/// endpoint or delivery).
async fn change<S: Store>(
    st: &AppState<S>,
    change: EndpointChange,
    key: Option<RequestKey>,
) -> Result<Option<Keyed<Changed>>, ApiError> {
    Ok(st.ledger.store().change_webhooks(change, key).await?)
}

fn internal(why: String) -> ApiError {
    crate::ledger::LedgerError::Internal(why).into()
}

fn changed_endpoint(done: Keyed<Changed>) -> Result<Keyed<Endpoint>, ApiError> {
    match done.value {
        Changed::Endpoint(e) => Ok(Keyed { value: e, replayed: done.replayed }),
        other => Err(internal(format!("an endpoint change answered {other:?}"))),
    }
}

/// An answer, marked `Idempotent-Replayed: true` when it is the first
/// answer to its key again.
fn answer(status: StatusCode, body: impl Serialize, replayed: bool) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    response
}

fn with_secret(e: &Endpoint) -> EndpointWithSecret {
    EndpointWithSecret {
        endpoint: EndpointView::of(e),
        secret: e.secret.clone(),
        old_secret_expires_at: e.old_secret.as_ref().map(|(_, until)| *until),
    }
}

/// A redelivery's or a recovery's answer: 202 with how many were queued.
fn queued(done: Keyed<Changed>) -> Result<Response, ApiError> {
    match done.value {
        Changed::Queued(queued) => Ok(answer(StatusCode::ACCEPTED, Queued { queued }, done.replayed)),
        other => Err(internal(format!("a delivery change answered {other:?}"))),
    }
}

/// Create a webhook endpoint.
///
/// Events are POSTed to `url`, signed as the Standard Webhooks specification says with the secret this answer shows (once). Only events that happen from now on are sent.
#[utoipa::path(post, path = "/v1/webhook-endpoints", operation_id = "createWebhookEndpoint", tag = "webhooks", request_body(content = NewEndpointBody, content_type = "application/json"), params(("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response")), responses((status = 201, description = "Created; the secret is shown only here", body = EndpointWithSecret, headers(("Location" = String, description = "The endpoint's path"))), super::openapi::Errors))]
pub async fn create<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    key: Key,
    Body(body): Body<NewEndpointBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let endpoint = Endpoint {
        id: format!("we_{}", crate::ledger::random_id()),
        url: url_of(&body.url)?,
        description: body.description.as_deref().map(description_of).transpose()?,
        events: body.events.as_deref().map(types_of).transpose()?,
        enabled: true,
        secret: Secret::generate().reveal(),
        old_secret: None,
        disabled_reason: None,
        created_at: super::system_now(),
    };
    let key = request_key(key, "POST", "/v1/webhook-endpoints", &body);
    let done = change(&st, EndpointChange::Create(endpoint), key).await?;
    let done =
        changed_endpoint(done.ok_or_else(|| internal("an endpoint creation changed nothing".into()))?)?;
    let mut response = answer(StatusCode::CREATED, with_secret(&done.value), done.replayed);
    created_at(&mut response, &format!("/v1/webhook-endpoints/{}", done.value.id));
    Ok(response)
}

/// List webhook endpoints.
///
/// Every endpoint, newest first, in one page (a server keeps at most 100).
#[utoipa::path(get, path = "/v1/webhook-endpoints", operation_id = "listWebhookEndpoints", tag = "webhooks", responses((status = 200, description = "Every endpoint, newest first", body = super::openapi::EndpointPage), super::openapi::ReadErrors))]
pub async fn list<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let all = st.ledger.store().endpoints().await?;
    debug_assert!(all.len() <= MAX_ENDPOINTS);
    let page = Page { data: all.iter().map(EndpointView::of).collect(), next_cursor: None };
    Ok(Json(page).into_response())
}

/// Get a webhook endpoint.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{eid}", operation_id = "getWebhookEndpoint", tag = "webhooks", params(("eid" = String, Path, description = "Endpoint id")), responses((status = 200, description = "The endpoint (never its secret)", body = EndpointView), super::openapi::ReadErrors))]
pub async fn show<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    Ok(Json(EndpointView::of(&stored(&st, &id).await?)).into_response())
}

/// Update a webhook endpoint.
///
/// Change its url, its event types or its description, or disable and enable it. Events that happen while it is disabled are kept and sent, in order, when it is enabled again.
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{eid}", operation_id = "updateWebhookEndpoint", tag = "webhooks", params(("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response"), ("eid" = String, Path, description = "Endpoint id")), request_body(content = EndpointPatchBody, content_type = "application/json"), responses((status = 200, description = "The endpoint as it now is", body = EndpointView), super::openapi::Errors))]
pub async fn update<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<EndpointPatchBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if body.url.is_none() && body.events.is_none() && body.enabled.is_none() && body.description.is_none() {
        return Err(ApiError::invalid("nothing to change: give url, events, enabled or description"));
    }
    let mut e = stored(&st, &id).await?;
    if let Some(url) = &body.url {
        e.url = url_of(url)?;
    }
    if let Some(events) = &body.events {
        e.events = events.as_deref().map(types_of).transpose()?;
    }
    if let Some(text) = &body.description {
        e.description = Some(description_of(text)?);
    }
    if let Some(enabled) = body.enabled {
        e.enabled = enabled;
        if enabled {
            e.disabled_reason = None;
        }
    }
    let key = request_key(key, "PATCH", &format!("/v1/webhook-endpoints/{id}"), &body);
    let done = change(&st, EndpointChange::Save(e), key).await?.ok_or_else(|| not_found(&id))?;
    let done = changed_endpoint(done)?;
    Ok(answer(StatusCode::OK, EndpointView::of(&done.value), done.replayed))
}

/// Delete a webhook endpoint.
///
/// It receives nothing more; its deliveries are forgotten.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{eid}", operation_id = "deleteWebhookEndpoint", tag = "webhooks", params(("eid" = String, Path, description = "Endpoint id")), responses((status = 204, description = "Deleted"), super::openapi::ReadErrors))]
pub async fn delete<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if st.ledger.store().delete_endpoint(id.clone()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

/// Rotate a webhook endpoint's secret.
///
/// Answers a new secret. For 24 hours both sign (two signatures, space-separated, in `webhook-signature`), so receivers can switch without losing an event.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{eid}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks", params(("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response"), ("eid" = String, Path, description = "Endpoint id")), responses((status = 200, description = "The new secret, shown only here", body = EndpointWithSecret), super::openapi::ReadErrors))]
pub async fn rotate_secret<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let mut e = stored(&st, &id).await?;
    let until = super::system_now() + OLD_SECRET_SIGNS_FOR;
    let secret = Secret::generate().reveal();
    e.old_secret = Some((std::mem::replace(&mut e.secret, secret), until));
    let key = request_key(key, "POST", &format!("/v1/webhook-endpoints/{id}/rotate-secret"), &());
    let done = change(&st, EndpointChange::Save(e), key).await?.ok_or_else(|| not_found(&id))?;
    let done = changed_endpoint(done)?;
    Ok(answer(StatusCode::OK, with_secret(&done.value), done.replayed))
}

/// `status`, `cursor` and `limit` of the deliveries list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Items per page, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// List an endpoint's deliveries.
///
/// One per event sent (or to send) to the endpoint, newest first, with its attempts and the last answer's status and first 1 KiB of body.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{eid}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks", params(("eid" = String, Path, description = "Endpoint id"), DeliveryParams), responses((status = 200, description = "Deliveries, newest first", body = super::openapi::DeliveryPage), super::openapi::ReadErrors))]
pub async fn deliveries<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Ids(id): Ids<String>,
    Q(q): Q<DeliveryParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    stored(&st, &id).await?;
    let page = super::page_of(&q.cursor, q.limit)?;
    let list = st.ledger.store().deliveries(id, q.status, page).await.map_err(super::list_error)?;
    Ok(Json(list).into_response())
}

/// List a delivery's attempts.
///
/// Every attempt of the endpoint's delivery of event `did`, newest first (the newest 50 are kept): when, the status it left the delivery in, the answer's HTTP status and first 1 KiB of body, or why there was none.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{eid}/deliveries/{did}/attempts", operation_id = "listWebhookAttempts", tag = "webhooks", params(("eid" = String, Path, description = "Endpoint id"), ("did" = String, Path, description = "The delivery's id: its event's id")), responses((status = 200, description = "Attempts, newest first", body = AttemptList), super::openapi::ReadErrors))]
pub async fn attempts<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, event_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    stored(&st, &id).await?;
    match st.ledger.store().attempts(id.clone(), event_id.clone()).await? {
        Some(data) => Ok(Json(AttemptList { data }).into_response()),
        None => Err(no_delivery(&id, &event_id)),
    }
}

fn no_delivery(endpoint: &str, event_id: &str) -> ApiError {
    ApiError::not_found(format!("webhook endpoint {endpoint} has no delivery {event_id}"))
}

/// What a redelivery or a recovery queued.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// Deliveries queued to be sent again.
    pub queued: u64,
}

/// Send one event again.
///
/// Queues the endpoint's delivery of event `did` again, with the same `webhook-id`, in its account's order.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{eid}/deliveries/{did}/redeliver", operation_id = "redeliverWebhook", tag = "webhooks", params(("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response"), ("eid" = String, Path, description = "Endpoint id"), ("did" = String, Path, description = "The delivery's id: its event's id")), responses((status = 202, description = "Queued", body = Queued), super::openapi::ReadErrors))]
pub async fn redeliver<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids((id, event_id)): Ids<(String, String)>,
    key: Key,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    stored(&st, &id).await?;
    let path = format!("/v1/webhook-endpoints/{id}/deliveries/{event_id}/redeliver");
    let key = request_key(key, "POST", &path, &());
    let redeliver = EndpointChange::Redeliver {
        endpoint: id.clone(),
        event_id: event_id.clone(),
        now: super::system_now(),
    };
    queued(change(&st, redeliver, key).await?.ok_or_else(|| no_delivery(&id, &event_id))?)
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// Every delivery made since this instant that failed is sent again.
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
}

/// Send again every failed delivery since an instant.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{eid}/recover", operation_id = "recoverWebhooks", tag = "webhooks", params(("Idempotency-Key" = Option<crate::ledger::IdempotencyKey>, Header, nullable = false, description = "Optional: 1-255 printable ASCII; a retry with the same key and body answers the first response"), ("eid" = String, Path, description = "Endpoint id")), request_body(content = RecoverBody, content_type = "application/json"), responses((status = 202, description = "Queued", body = Queued), super::openapi::Errors))]
pub async fn recover<S: Store>(
    State(st): State<AppState<S>>,
    caller: Caller,
    _: NoQuery,
    Ids(id): Ids<String>,
    key: Key,
    Body(body): Body<RecoverBody>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    stored(&st, &id).await?;
    let now = super::system_now();
    if body.since > now {
        return Err(ApiError::invalid("since is in the future: give an instant in the past"));
    }
    let key = request_key(key, "POST", &format!("/v1/webhook-endpoints/{id}/recover"), &body);
    let recover = EndpointChange::Recover { endpoint: id.clone(), since: body.since, now };
    queued(change(&st, recover, key).await?.ok_or_else(|| not_found(&id))?)
}
