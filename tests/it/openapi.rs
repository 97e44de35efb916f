//! `/openapi.json` is the router's own: every (method, path) the real router of a process
//! serves is in the document that process serves, and nothing else is; and the document says
//! what every operation needs (its problem bodies, its certificate, its parameters).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use leadbridge::shared::config::LimitSettings;
use leadbridge::shared::http::body::{MAX_CASE_NO_CHARS, MAX_REASON_CHARS};
use leadbridge::{Application, Roles};
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::{test_settings, Backend, TestPki};

/// The methods a route could be given. HEAD is left out: axum answers it wherever GET is
/// served, and OpenAPI does not list it apart.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

type Operations = BTreeSet<(String, String)>;

/// The real router of a process running `roles` (built, never run: SQLite and the embedded
/// broker, so it needs no service and leaves nothing behind).
async fn router_of(roles: Roles) -> Router {
    let data_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let settings = test_settings(Backend::Embedded, data_dir.path(), &pki).await;
    let application = Application::build(settings, roles)
        .await
        .expect("the hub builds");
    application
        .router()
        .expect("these roles serve HTTP")
        .clone()
}

async fn call(router: &Router, method: Method, path: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

/// The paths `router` has a route for. axum lists them nowhere public, but its `Debug` output
/// names each as `RouteId(n): "<path>"` in its `path_router` (the `fallback_router` after it
/// holds the fallback's catch-all); should that output change, the paths found stop matching
/// the document and the test fails rather than passing on nothing.
fn routed_paths(router: &Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let routes = text
        .split_once("path_router: ")
        .and_then(|(_, rest)| rest.split_once("fallback_router: "))
        .map(|(routes, _)| routes)
        .unwrap_or_else(|| panic!("axum's Debug output names its routers: {text}"));
    routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|rest| {
            let (_, after) = rest.split_once("): \"")?;
            let (path, _) = after.split_once('"')?;
            Some(path.to_owned())
        })
        .collect()
}

/// Every (method, path) `router` serves: each routed path asked with each method, a method
/// being served unless the router answers 405. No request carries a certificate or a body, so
/// none gets past its handler's first check: nothing is stored.
async fn served(router: &Router) -> Operations {
    let mut served = Operations::new();
    for path in routed_paths(router) {
        let concrete = with_sample_parameters(&path);
        for method in METHODS {
            let (status, _) = call(router, method.clone(), &concrete).await;
            if status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    served
}

/// `path` with each `{parameter}` replaced by a value.
fn with_sample_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "sample"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The document `router` serves.
async fn document_of(router: &Router) -> Value {
    let (status, body) = call(router, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).expect("the document is JSON")
}

fn operations(document: &Value) -> impl Iterator<Item = (String, &str, &Value)> {
    document["paths"]
        .as_object()
        .expect("the document has paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .filter(|(key, _)| METHODS.iter().any(|m| m.as_str().eq_ignore_ascii_case(key)))
                .map(move |(method, operation)| (method.to_uppercase(), path.as_str(), operation))
        })
}

fn documented(document: &Value) -> Operations {
    operations(document)
        .map(|(method, path, _)| (method, path.to_owned()))
        .collect()
}

#[tokio::test]
async fn every_route_served_is_documented_and_every_documented_route_is_served() {
    for roles in [Roles::ALL, Roles::HUB, Roles::POLICE] {
        let router = router_of(roles).await;
        let served = served(&router).await;
        let documented = documented(&document_of(&router).await);
        assert!(
            served.contains(&("GET".to_owned(), "/healthz".to_owned())),
            "the routes were found at all ({roles:?}): {served:?}"
        );
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "with roles {roles:?}, served but not documented: {undocumented:?}; documented \
             but not served: {unserved:?}"
        );
    }
}

#[tokio::test]
async fn a_process_documents_the_routes_of_the_roles_it_runs() {
    let paths = |document: Value| -> BTreeSet<String> {
        documented(&document).into_iter().map(|(_, p)| p).collect()
    };
    let all = paths(document_of(&router_of(Roles::ALL).await).await);
    let hub = paths(document_of(&router_of(Roles::HUB).await).await);
    let police = paths(document_of(&router_of(Roles::POLICE).await).await);
    let agency_api = |path: &String| path.starts_with("/v1/");
    let police_api = |path: &String| path.starts_with("/police/v1/");
    assert_eq!(all.iter().filter(|p| agency_api(p)).count(), 9, "{all:?}");
    assert_eq!(all.iter().filter(|p| police_api(p)).count(), 4, "{all:?}");
    assert!(!hub.iter().any(police_api), "{hub:?}");
    assert!(!police.iter().any(agency_api), "{police:?}");
    for own in ["/openapi.json", "/healthz", "/readyz", "/metrics"] {
        for document in [&all, &hub, &police] {
            assert!(document.contains(own), "{own} in {document:?}");
        }
    }
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("{reference} is local"));
    document
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} resolves"))
}

/// Every `$ref` anywhere under `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(member, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn every_operation_says_who_may_call_it_and_how_it_fails() {
    let document = document_of(&router_of(Roles::ALL).await).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        document["components"]["securitySchemes"]["mutualTLS"]["type"],
        "mutualTLS"
    );
    assert_eq!(document["security"], serde_json::json!([{"mutualTLS": []}]));

    let mut refs = Vec::new();
    references(&document, &mut refs);
    for reference in &refs {
        resolve(&document, reference);
    }

    let mut operation_ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: operationId {id:?} is unique"
        );
        assert!(operation["summary"].is_string(), "{name} has a summary");
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{name} documents its success"
        );
        for (status, response) in responses {
            assert!(response["description"].is_string(), "{name} {status}");
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{name} {status} is a problem document"
                );
            }
        }
        // An operation without its own `security` needs the document's: a certificate.
        let anonymous = operation["security"]
            .as_array()
            .is_some_and(|requirements| {
                requirements
                    .iter()
                    .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
            });
        let public = path.starts_with("/v1/schemas")
            || ["/openapi.json", "/healthz", "/readyz", "/metrics"].contains(&path);
        assert_eq!(anonymous, public, "{name}: anonymous callers allowed");
        if !anonymous {
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{name} documents {status}");
            }
        }
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let parameter = segment.trim_matches(['{', '}']);
            assert!(
                parameters
                    .iter()
                    .any(|p| p["name"] == parameter && p["in"] == "path" && p["required"] == true),
                "{name} documents its path parameter {parameter}"
            );
        }
    }

    // The documented bounds are the ones the handlers enforce.
    let schema = |name: &str| &document["components"]["schemas"][name];
    assert_eq!(
        schema("ReconsiderationBody")["properties"]["reason"]["maxLength"],
        MAX_REASON_CHARS
    );
    assert_eq!(
        schema("DecisionRequest")["properties"]["reason"]["maxLength"],
        MAX_REASON_CHARS
    );
    assert_eq!(
        schema("DecisionRequest")["properties"]["police_case_no"]["maxLength"],
        MAX_CASE_NO_CHARS
    );
    assert_eq!(
        schema("BatchRequest")["properties"]["leads"]["maxItems"],
        LimitSettings::default().max_batch_leads
    );
    // Each receipt event moves a lead to the status of its name, so each is a status.
    let statuses = schema("LeadState")["enum"].as_array().unwrap();
    let steps = schema("ReceiptStep")["oneOf"].as_array().unwrap();
    assert!(!steps.is_empty());
    for step in steps {
        let event = step
            .pointer("/properties/event/enum/0")
            .or_else(|| step.pointer("/allOf/1/properties/event/enum/0"))
            .unwrap_or_else(|| panic!("a receipt step names its event: {step}"));
        assert!(statuses.contains(event), "{event} is a lead status");
    }
    for (name, additional) in [("ReconsiderationBody", false), ("DecisionRequest", false)] {
        assert_eq!(
            schema(name)["additionalProperties"],
            additional,
            "{name} refuses unknown members, as its handler does"
        );
    }
}
