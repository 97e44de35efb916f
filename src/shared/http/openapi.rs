//! The OpenAPI document, generated: each handler carries its operation (`#[utoipa::path]`),
//! each request and response type its schema (`ToSchema`), and a role registers a handler with
//! `utoipa_axum::routes!`, which takes the method and path from that operation, so a route and
//! its documentation are one declaration. Each role hands its routes over as an
//! [`OpenApiRouter`](utoipa_axum::router::OpenApiRouter); [`super::router`] merges them onto
//! [`base`], which says what holds for every operation, and serves the result at
//! `/openapi.json`.

use std::sync::Arc;

use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

use super::{ProblemDocument, PROBLEM_JSON};

/// The description of the whole API: who calls it and how errors look.
const DESCRIPTION: &str = "Administrative agencies submit case leads to the police over HTTPS \
with mutual TLS. The agency is the subject of its client certificate (OU=agency, CN=<agency>). \
Every error is RFC 9457 application/problem+json; validation problems carry JSON Pointers and \
stable codes (see schemas/README.md). Investigators (OU=investigator, CN=<police unit>) use \
/police/v1; their decisions reach the agency through /v1/feedback. A process documents the \
routes of the roles it runs.";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "LeadBridge API", version = "1", description = DESCRIPTION),
    servers((url = "https://127.0.0.1:8443", description = "`serve`'s default listen address")),
    security(("mutualTLS" = [])),
    components(schemas(ProblemDocument)),
    modifiers(&MutualTls)
)]
struct Base;

/// The security scheme every operation names unless it says it needs none: the derive has no
/// syntax for a `mutualTLS` scheme.
struct MutualTls;

impl utoipa::Modify for MutualTls {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "mutualTLS",
                SecurityScheme::MutualTls {
                    description: Some(
                        "Client certificate issued by the hub's CA: an agency's \
                         (OU=agency) for /v1, an investigator's (OU=investigator) for \
                         /police/v1."
                            .into(),
                    ),
                    deprecated: None,
                    extensions: None,
                },
            );
    }
}

/// The document's frame, before any route is added.
pub fn base() -> OpenApi {
    <Base as utoipa::OpenApi>::openapi()
}

/// Completes the document the routes made: the edge turns every error answer into
/// problem+json (see the module `error` and the router's safety net), so an error response
/// an operation lists without a body of its own has the `Problem` body. Stating that once
/// here keeps each operation's list to what differs: its statuses and why.
pub fn finish(mut document: OpenApi) -> Arc<str> {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if let (true, RefOr::T(response)) = (is_error, response) {
                    if response.content.is_empty() {
                        let problem = Content::new(Some(Ref::from_schema_name("Problem")));
                        response
                            .content
                            .insert(PROBLEM_JSON.to_owned(), RefOr::T(problem));
                    }
                }
            }
        }
    }
    document
        .to_pretty_json()
        .expect("an OpenAPI document serialises")
        .into()
}
