//! The OpenAPI document and the service agree, both ways: every documented operation is
//! served (and answers as a served route: 401 when it needs a token, never the router's
//! ROUTE_NOT_FOUND / METHOD_NOT_ALLOWED), every served route is documented with the same
//! role, and undocumented methods on documented paths are 405.

use std::collections::BTreeMap;

use crate::kit;
use crate::kit::api::Harness;
use mpcp_pa::api::Limits;
use mpcp_pa::api::routes::table;
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

fn documented() -> BTreeMap<(String, String), String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/mpcp-pa.json"))
            .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{method} on {path}");
            let mut role = op["x-mpcp-role"].as_str().unwrap().to_string();
            // Further roles an operation admits, as in the route table's `also`.
            if let Some(also) = op.get("x-mpcp-also-roles") {
                for r in also.as_array().unwrap() {
                    role = format!("{role}+{}", r.as_str().unwrap());
                }
            }
            let secured = !op["security"].as_array().unwrap().is_empty();
            assert!(
                op.get("x-mpcp-also-roles").is_none() || role != "public",
                "a public operation admits every caller: {method} {path}"
            );
            assert_eq!(secured, role != "public", "security of {method} {path}");
            for status in op["responses"].as_object().unwrap().keys() {
                status.parse::<u16>().unwrap();
            }
            out.insert((method.to_uppercase(), path.clone()), role);
        }
    }
    out
}

fn served() -> BTreeMap<(String, String), String> {
    table()
        .into_iter()
        .map(|e| {
            let mut role = e
                .role
                .map(|r| r.as_str().to_string())
                .unwrap_or("public".into());
            for r in e.also {
                role = format!("{role}+{}", r.as_str());
            }
            ((e.method.as_str().to_string(), e.path.to_string()), role)
        })
        .collect()
}

#[test]
fn document_and_route_table_agree_both_ways() {
    kit::child::own_process!("document_and_route_table_agree_both_ways");
    let doc = documented();
    let routes = served();
    for (k, role) in &routes {
        assert_eq!(
            doc.get(k),
            Some(role),
            "served but not documented (or other role): {k:?}"
        );
    }
    for (k, role) in &doc {
        assert_eq!(
            routes.get(k),
            Some(role),
            "documented but not served: {k:?}"
        );
    }
}

fn concrete(path: &str) -> String {
    path.replace("{policyHash}", &"0".repeat(64))
        .replace("{role}", "root")
        .replace("{kid}", "kid-x")
        .replace("{grantId}", "grant-x")
        .replace("{allowlistId}", "list-x")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    kit::child::own_process!("every_documented_operation_is_served");
    let h = Harness::start(Limits::default()).await;
    let doc = documented();
    for ((method, path), role) in &doc {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = h
            .client
            .request(m, h.url(&concrete(path)))
            .send()
            .await
            .unwrap();
        // The console's assets are HTML, JavaScript and CSS; everything else is JSON.
        let status = resp.status().as_u16();
        let body: Value =
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or("");
        assert!(
            code != "ROUTE_NOT_FOUND" && code != "METHOD_NOT_ALLOWED",
            "{method} {path} not served: {status} {body}"
        );
        if role != "public" {
            assert_eq!(status, 401, "{method} {path} must need a token");
        } else {
            assert_ne!(status, 401, "{method} {path} must be public");
        }
    }
    // A method the document does not list on a documented path.
    for (method, path) in [
        ("DELETE", "/v1/grants"),
        ("PUT", "/v1/policies"),
        ("POST", "/healthz"),
    ] {
        assert!(!doc.contains_key(&(method.to_string(), path.to_string())));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = h.client.request(m, h.url(path)).send().await.unwrap();
        kit::api::assert_error(&kit::api::read(resp).await, 405, "METHOD_NOT_ALLOWED");
    }
}
