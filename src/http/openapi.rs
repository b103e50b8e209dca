//! The OpenAPI 3.1 document, generated from the code by utoipa: each
//! handler carries its `#[utoipa::path]`, each body and view derives its
//! schema, and each HTTP module's `routes()` registers a handler with its
//! operation in one line (utoipa-axum), so the document is taken from the
//! routers themselves ([`document`]) and lists no route of its own. This
//! module adds what no route carries (info, security, shared schemas, the
//! error responses every route may give). Served at `GET /openapi.json`.

use std::borrow::Cow;
use std::sync::OnceLock;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::domain::account::AccountPatch;
use crate::domain::credits::{Credits, MAX_CREDITS_PER_OPERATION};
use crate::domain::money::{Amount, Currency, Micros};
use crate::domain::period::Month;
use crate::domain::view::{
    AccountView, DebitView, EntryView, HoldView, Page, PurchaseView, StatementView, UsageView,
};
use crate::ledger::{IdempotencyKey, MAX_KEY_BYTES, Store};

/// `application/problem+json` (RFC 9457), with API.md's `code`.
#[derive(serde::Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// What a client matches on.
    #[schema(inline)]
    pub code: super::error::ErrorCode,
    /// insufficient_credits: credits available now.
    pub available: Option<i64>,
    /// insufficient_credits: credits asked for.
    pub requested: Option<i64>,
    /// insufficient_credits: what is missing.
    pub shortfall: Option<i64>,
    /// purchase_limit_exceeded: the monthly limit.
    pub limit: Option<i64>,
    /// purchase_limit_exceeded: credits still purchasable this month.
    pub remaining: Option<i64>,
    /// purchases_suspended: the failed statement.
    pub statement_id: Option<String>,
}

/// Errors any authenticated route may answer. Only described in the
/// document, never built (the answers themselves are [`super::ApiError`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// Malformed JSON, bad query string or header, missing Idempotency-Key.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or unknown bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// An account token on an admin-only route.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such account or object (or not this token's account).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Idempotency key reused with another body, object exists, hold not active.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body did not arrive within 10 seconds of the headers.
    #[response(status = 408, content_type = "application/problem+json")]
    TooSlow(Problem),
    /// Body larger than 64 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body not sent as application/json.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Wrong types, unknown fields, out-of-range values; purchase limit; suspended purchases; closed account.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// The database cannot be reached, or the request timed out: retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The errors of a route without a body (a read, a revocation): no 408,
/// 409, 413 or 415, which only a body or a write can cause.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// Bad or unknown query parameter, bad cursor.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or unknown bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// An account token on an admin-only route.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such account or object (or not this token's account).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// A well-formed value the rules refuse (a month range too long).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// The database cannot be reached, or the request timed out: retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The 402 of spending routes (described only, as [`Errors`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Spending {
    /// Not enough credits: nothing was spent (all or nothing), and the
    /// answer says how many are available and how many are missing.
    #[response(status = 402, content_type = "application/problem+json")]
    InsufficientCredits(Problem),
}

fn string_schema(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

impl PartialSchema for Micros {
    fn schema() -> RefOr<Schema> {
        string_schema("Exact decimal amount of money (up to 6 decimals).", r"^-?[0-9]+\.[0-9]{2,6}$", "5.00")
    }
}
impl ToSchema for Micros {
    fn name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "An amount charged, rounded half-up to the currency's minor unit and written with exactly its \
             decimals (USD 2: \"5.00\", JPY 0: \"500\", BHD 3: \"1.250\"); negative on refund lines.",
            r"^-?[0-9]+(\.[0-9]{1,6})?$",
            "5.00",
        )
    }
}
impl ToSchema for Amount {}

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        string_schema("ISO 4217 currency code.", "^[A-Z]{3}$", "USD")
    }
}
impl ToSchema for Currency {}

impl PartialSchema for Month {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "A calendar month, YYYY-MM, of the years 1970 to 9001.",
            "^(19[7-9][0-9]|[2-8][0-9]{3}|900[01])-(0[1-9]|1[0-2])$",
            "2026-11",
        )
    }
}
impl ToSchema for Month {}

impl PartialSchema for IdempotencyKey {
    fn schema() -> RefOr<Schema> {
        // Printable ASCII (`IdempotencyKey::parse`); HTTP drops the spaces
        // around a header value, so a key neither starts nor ends with one.
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("1-255 printable ASCII characters, chosen by the client, one per operation."))
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_BYTES))
            .pattern(Some("^[!-~]([ -~]*[!-~])?$"))
            .examples(["order-4711-debit"]);
        schema.into()
    }
}
impl ToSchema for IdempotencyKey {}

impl PartialSchema for Credits {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .description(Some(
                "Whole credits, written as a JSON integer (`5`, not `5.0`); one credit is one text to one patron.",
            ))
            .minimum(Some(1))
            .maximum(Some(MAX_CREDITS_PER_OPERATION))
            .into()
    }
}
impl ToSchema for Credits {}

/// A page's schema, `Page_<Item>` as utoipa's derive named it (generated
/// clients keep their class names), with its items a `$ref` to the item's
/// schema: the derive would inline the item in every page (utoipa
/// #1586). Page has no derive, so `body = Page<Item>` does not compile: an
/// operation names its page by one of the aliases below.
impl<T: ToSchema> PartialSchema for Page<T> {
    fn schema() -> RefOr<Schema> {
        let next_cursor = ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(r#"A page of a list, newest first (API.md "Lists")."#))
            .property("data", ArrayBuilder::new().items(Ref::from_schema_name(T::name())))
            .required("data")
            .property("next_cursor", next_cursor)
            .into()
    }
}

impl<T: ToSchema> ToSchema for Page<T> {
    fn name() -> Cow<'static, str> {
        format!("Page_{}", T::name()).into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

/// The pages the operations answer, by name (see [`Page`]'s schema).
pub type AccountPage = Page<AccountView>;
pub type PurchasePage = Page<PurchaseView>;
pub type DebitPage = Page<DebitView>;
pub type HoldPage = Page<HoldView>;
pub type EntryPage = Page<EntryView>;
pub type StatementPage = Page<StatementView>;
pub type UsagePage = Page<UsageView>;
pub type EventPage = Page<crate::domain::event::EventView>;
pub type EndpointPage = Page<crate::ledger::webhook::EndpointView>;
pub type DeliveryPage = Page<crate::ledger::webhook::DeliveryView>;

/// The bearer scheme every route but health, metrics and this document
/// requires.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The admin token, or an account token (tck_...)"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// `x-request-id` on every answer of every operation: run once the routes'
/// operations are in the document.
fn add_request_ids(doc: &mut utoipa::openapi::OpenApi) {
    let request_id = utoipa::openapi::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("The request's id, as sent or as made by the server; in its log line too"))
        .build();
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for op in ops.into_iter().flatten() {
            for response in op.responses.responses.values_mut() {
                if let RefOr::T(r) = response {
                    r.headers.insert("x-request-id".to_string(), request_id.clone());
                }
            }
        }
    }
}

/// A patch that names no setting changes nothing and is refused, so
/// [`AccountPatch`] has at least one property (the derive drops a
/// struct's `min_properties`).
fn patch_needs_a_setting(doc: &mut utoipa::openapi::OpenApi) {
    let schemas = doc.components.as_mut().map(|c| &mut c.schemas);
    if let Some(RefOr::T(Schema::Object(patch))) = schemas.and_then(|s| s.get_mut(&*AccountPatch::name())) {
        patch.min_properties = Some(1);
    }
}

/// A body that `{}` satisfies is optional: no body reads as `{}`
/// (`extract::Body`), so closing months and refunding a purchase need none.
fn optional_bodies(doc: &mut utoipa::openapi::OpenApi) {
    let Some(components) = &doc.components else { return };
    let admits_empty = |body: &utoipa::openapi::request_body::RequestBody| {
        body.content.values().all(|media| match &media.schema {
            Some(RefOr::Ref(r)) => {
                let name = r.ref_location.trim_start_matches("#/components/schemas/");
                matches!(components.schemas.get(name), Some(RefOr::T(Schema::Object(o)))
                    if o.required.is_empty() && o.min_properties.is_none())
            }
            _ => false,
        })
    };
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.post, &mut item.put, &mut item.patch].into_iter().flatten() {
            if let Some(body) = &mut op.request_body
                && admits_empty(body)
            {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

/// What no route carries: info, servers, security, the shared schemas.
/// The paths come from the routers ([`document`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "textcredits", version = "1", description = "SMS text-marketing credits: balances, purchases, spending, statements. The reference, with examples and the rules (idempotency, pagination, money, time), is docs/api.md in the repository."),
    servers((url = "/", description = "This server")),
    components(schemas(Micros, Amount, Currency, Month, Credits, IdempotencyKey, Problem)),
    modifiers(&Security),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The document: [`ApiDoc`] and the operation of every route
/// [`super::api`] registers, the test clock's included.
pub fn document<S: Store>() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::api::<S>(true).into_openapi());
    add_request_ids(&mut doc);
    patch_needs_a_setting(&mut doc);
    optional_bodies(&mut doc);
    doc
}

/// The document as JSON, built once: one static for every `S`, as the
/// document does not depend on the store.
pub fn document_json<S: Store>() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document::<S>().to_json().expect("the OpenAPI document serializes"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn document_value() -> Value {
        serde_json::from_str(document_json::<SqliteStore>()).expect("the document is JSON")
    }

    /// Each page's items are a `$ref` to the item's schema, which is in the
    /// components: a generated client gets one class per item, shared by
    /// the item's page and the item's own routes.
    #[test]
    fn every_page_schema_refers_to_its_item_schema() {
        let doc = document_value();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let pages: Vec<_> = schemas.iter().filter(|(name, _)| name.starts_with("Page_")).collect();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        let lists = [
            "Account",
            "Debit",
            "Delivery",
            "Endpoint",
            "Entry",
            "Event",
            "Hold",
            "Purchase",
            "Statement",
            "Usage",
        ];
        let expected: Vec<String> = lists.iter().map(|item| format!("Page_{item}View")).collect();
        assert_eq!(names, expected, "one page per list item");
        for (name, page) in pages {
            let item = &name["Page_".len()..];
            let items = &page["properties"]["data"]["items"];
            assert_eq!(items, &json!({"$ref": format!("#/components/schemas/{item}")}), "{name}");
            assert!(schemas.contains_key(item), "{name}: no schema {item}");
        }
    }

    /// Nowhere does an array inline the schema of its items: every item
    /// schema with properties is a component of its own.
    #[test]
    fn no_array_inlines_an_object_schema() {
        fn walk(value: &Value, at: &str, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if map.get("type") == Some(&json!("array"))
                        && map.get("items").is_some_and(|items| items.get("properties").is_some())
                    {
                        found.push(at.to_string());
                    }
                    for (key, inner) in map {
                        walk(inner, &format!("{at}/{key}"), found);
                    }
                }
                Value::Array(list) => {
                    for (i, inner) in list.iter().enumerate() {
                        walk(inner, &format!("{at}/{i}"), found);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&document_value(), "", &mut found);
        assert!(found.is_empty(), "arrays with inline object items: {found:?}");
    }
}
