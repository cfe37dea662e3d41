//! Receipts on the real binary: `up` gives the embedded default a receipt key (ES256, on its
//! own token) that the receipt key set publishes, and an HSM configuration without the
//! optional receipt role still serves everything else while every receipt route answers
//! 503 RECEIPTS_NOT_CONFIGURED and nothing is signed.

use crate::kit;
use crate::kit::bin::{bin, client, json_post, serve_on, up};
use serde_json::{Value, json};

async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    (
        r.status().as_u16(),
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_publishes_an_es256_receipt_key() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("receipts_up");
    let data = dir.path().join("appliance");
    let (server, addr, _, seen) = up(&data, &[]);
    let (status, keys) = get(
        &client(&data),
        format!("https://{addr}/.well-known/mpcp-receipt-keys.json"),
    )
    .await;
    assert_eq!(status, 200, "{seen:#?}");
    let list = keys["keys"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{keys}");
    assert_eq!(
        (
            &list[0]["kty"],
            &list[0]["crv"],
            &list[0]["alg"],
            &list[0]["active"]
        ),
        (&json!("EC"), &json!("P-256"), &json!("ES256"), &json!(true))
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_receipt_role_receipts_are_refused_and_the_rest_serves() {
    let _gate = kit::gate::shared();
    let dir = kit::tmp::dir("receipts_unconfigured");
    let data = dir.path();
    bin(data, &["hsm", "init-dev"]);
    let config = mpcp_pa::app::DataDir::new(data).hsm_config();
    let text = std::fs::read_to_string(&config).unwrap();
    // Without both optional roles (the receipt and XRPL account roles are written last).
    let (head, _) = text.split_once("\n[roles.receipt-signing]").unwrap();
    let mut without = head.to_string();
    for role in ["receipt-signing", "xrpl-account"] {
        without = without.replace(
            &format!(
                "\n[tokens.mpcp-{role}]\npin_file = {:?}\n",
                format!("secrets/{role}.user.pin")
            ),
            "",
        );
    }
    assert!(!without.contains("receipt"), "{without}");
    std::fs::write(&config, format!("{without}\n")).unwrap();
    for role in ["grant-signing", "root", "audit"] {
        bin(data, &["keys", "rotate", "--role", role, "--alg", "EdDSA"]);
    }
    let token = |name: &str, role: &str| {
        let out = bin(data, &["tokens", "create", "--name", name, "--role", role]).stdout;
        String::from_utf8(out).unwrap().trim().to_string()
    };
    let requester = token("requester", "receipt-requester");
    let (server, base) = serve_on(data, &[]);
    let http = client(data);
    let (status, v) = get(&http, format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = get(&http, format!("{base}/.well-known/mpcp-receipt-keys.json")).await;
    assert_eq!((status, v), (200, json!({"keys": []})));
    let body = json!({"audience": "mcp://p", "actionId": "a-1", "subject": "s",
        "request": {"name": "t", "arguments": {}, "_meta": {"authorization_binding": {"nonce": "n"}}}});
    let r = json_post(
        &http,
        format!("{base}/v1/receipts/decisions"),
        &requester,
        body.to_string(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["code"], "RECEIPTS_NOT_CONFIGURED", "{v}");
    server.stop();
}
