//! `/readyz` follows the HSM tokens live: ready while every role's token is logged in, 503
//! NOT_READY naming the token by its roles (never its label) when its sessions are closed or
//! its login is lost behind the appliance's back, and ready again once the pool has recovered
//! (without a restart). While recovery cannot log in (PIN changed), it stays not ready.

use std::sync::Arc;
use std::time::Duration;

use crate::kit;
use crate::kit::child::isolated;
use crate::kit::hsm::{other_handle, slot_of, user_pin};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use mpcp_pa::algorithms::AlgorithmPolicy;
use mpcp_pa::api::tls::{dev_names, ensure_dev_material, server_config};
use mpcp_pa::api::{AppState, Limits, ServiceConfig, ServiceParts, Transport, router, server};
use mpcp_pa::audit::{AuditConfig, AuditLog};
use mpcp_pa::clock::SystemClock;
use mpcp_pa::hsm::dev::SOFTHSM2_MODULE;
use mpcp_pa::hsm::{HsmBackend, readiness};
use mpcp_pa::keys::KeyRegistry;
use mpcp_pa::store::Store;
use serde_json::Value;

/// `GET /readyz`: status and body.
async fn readyz(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[test]
fn readyz_follows_token_login() {
    isolated(module_path!(), "readyz_follows_token_login", |dir| {
        let init = mpcp_pa::app::DataDir::new(dir).init_dev().unwrap();
        let backend = Arc::new(HsmBackend::open(&init.config).unwrap());
        let probes = readiness::probes(&backend);
        assert_eq!(
            probes.len(),
            mpcp_pa::keys::KeyRole::ALL.len(),
            "one probe per token"
        );
        let store = Store::open(&dir.join("store")).unwrap();
        let clock = Arc::new(SystemClock);
        let audit = Arc::new(
            AuditLog::open(&store, AuditConfig::new("pa.test/audit"), clock.clone()).unwrap(),
        );
        let registry = Arc::new(
            KeyRegistry::new(
                &store,
                backend.clone(),
                audit.clone(),
                clock.clone(),
                Arc::new(AlgorithmPolicy::builtin().unwrap()),
            )
            .unwrap(),
        );
        let state = AppState::new(
            ServiceParts {
                store: store.clone(),
                audit: mpcp_pa::api::AuditHandle::new(audit.clone()),
                registry,
                clock,
                readiness: probes,
                metrics: None,
            },
            ServiceConfig::new("pa.test"),
        )
        .unwrap();
        let tls = mpcp_pa::app::DataDir::new(dir).tls();
        ensure_dev_material(&tls, &dev_names()).unwrap();

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let server = server::start(
                "127.0.0.1:0".parse().unwrap(),
                router(state),
                Transport::Tls(server_config(&tls).unwrap()),
                Limits::default(),
                std::future::pending(),
            )
            .await
            .unwrap();
            let base = format!("https://127.0.0.1:{}", server.local_addr().port());
            let client = kit::api::client_for(&tls);
            assert_eq!(readyz(&client, &base).await.0, 200);

            // Login lost on the grant-signing token (login state is per token and process).
            let p = other_handle();
            let grant_slot = slot_of(&p, "mpcp-grant-signing");
            p.open_ro_session(grant_slot).unwrap().logout().unwrap();
            let (status, body) = readyz(&client, &base).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["code"], "NOT_READY", "{body}");
            let msg = body["message"].as_str().unwrap();
            assert!(
                msg.contains("HSM token of grant-signing: HSM_UNAVAILABLE"),
                "{msg}"
            );
            assert!(!msg.contains("of root"), "only the affected token: {msg}");
            assert!(!msg.contains("mpcp-"), "no token label in public: {msg}");
            // The failed check started recovery: the next probe logs in again.
            assert_eq!(readyz(&client, &base).await.0, 200);

            // Every session of the root token closed elsewhere.
            let root_slot = slot_of(&p, "mpcp-root");
            let raw = unsafe { cryptoki_sys::Pkcs11::new(SOFTHSM2_MODULE) }.unwrap();
            assert_eq!(
                unsafe { raw.C_CloseAllSessions(root_slot.id()) },
                cryptoki_sys::CKR_OK
            );
            let (status, body) = readyz(&client, &base).await;
            assert_eq!(status, 503, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("HSM token of root:"),
                "{body}"
            );
            assert_eq!(readyz(&client, &base).await.0, 200);

            // PIN changed and login dropped: recovery cannot log in, so not ready until the
            // PIN is back (and the backoff has passed).
            let old = AuthPin::new(user_pin(dir, "audit").into());
            let new = AuthPin::new("another-user-pin".into());
            let session = p.open_rw_session(slot_of(&p, "mpcp-audit")).unwrap();
            session.set_pin(&old, &new).unwrap();
            session.logout().unwrap();
            for _ in 0..3 {
                let (status, body) = readyz(&client, &base).await;
                assert_eq!(status, 503, "{body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("HSM token of audit:"),
                    "{body}"
                );
            }
            session.login(UserType::User, Some(&new)).unwrap();
            session.set_pin(&new, &old).unwrap();
            session.logout().unwrap();
            let mut ready = false;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if readyz(&client, &base).await.0 == 200 {
                    ready = true;
                    break;
                }
            }
            assert!(ready, "ready again once the PIN works");
            server.shutdown().await.unwrap();
        });
    });
}
