//! Lattice mounted inside another axum application, beside its own routes.

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};
use lattice::{Config, Homeserver};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::Client;

#[tokio::test]
async fn mounted_router_serves_beside_app_routes() {
    // The embedding path does not depend on the backend, so SQLite covers it.
    {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.data_dir = data.path().to_path_buf();
        let homeserver = Homeserver::new(config).await.expect("homeserver starts");
        let shutdown = homeserver.shutdown_handle();
        let app = Router::new()
            .route("/status", get(|| async { Json(json!({ "application": "ok" })) }))
            .merge(homeserver.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
        });
        let base = format!("http://{addr}");
        let client = Client::new(&base, None);

        let (status, body) = client.get("/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["application"], "ok", "the application's own route still answers");

        let (status, body) = client.get("/_matrix/client/versions").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["versions"].as_array().unwrap().contains(&json!("v1.16")), "versions: {body}");

        let (status, body) = client
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": "embedded", "password": "pw", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], "@embedded:localhost");

        shutdown.shutdown().await;
        server.abort();
    }
}
