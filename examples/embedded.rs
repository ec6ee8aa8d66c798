//! An axum application that carries a Matrix homeserver inside it.
//!
//! The application serves its own `/status` route; every Matrix path
//! (`/_matrix/...`, `/.well-known/matrix/...`) goes to Lattice on the same
//! listener. Run it with `cargo run --example embedded`, then for example
//! `curl http://127.0.0.1:8080/status` and
//! `curl http://127.0.0.1:8080/_matrix/client/versions`.

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};
use lattice::{Config, Homeserver};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info,ruma_state_res=warn").init();

    let mut config = Config::default();
    config.server_name = "localhost".into();
    config.data_dir = "./data-embedded".into();
    let homeserver = Homeserver::new(config).await?;
    let shutdown = homeserver.shutdown_handle();

    let app = Router::new()
        .route("/status", get(|| async { Json(json!({ "application": "ok" })) }))
        .merge(homeserver.router());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://127.0.0.1:8080");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    // Commit what is queued and close the database before the process ends.
    shutdown.shutdown().await;
    Ok(())
}
