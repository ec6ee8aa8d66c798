//! Durability: every send the server acknowledged survives SIGKILL.
//!
//! The test runs the real `lattice` binary, keeps many sends in flight, kills
//! the process with SIGKILL right after a burst of acknowledgements, restarts
//! it on the same database and reads the room back.

use std::{
    collections::HashSet,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    base: String,
}

fn start(data_dir: &std::path::Path, port: u16, database_url: Option<&str>) -> Server {
    let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lattice"));
    command
        .arg("serve")
        .env("LATTICE_DATA_DIR", data_dir)
        .env("LATTICE_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
        .env("LATTICE_RATE_LIMITS__ENABLED", "false")
        .env("LATTICE_POLICY__NAME", "open")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(url) = database_url {
        command.env("LATTICE_DATABASE__URL", url);
    }
    let child = command.spawn().expect("start the lattice binary");
    Server { child, base: format!("http://127.0.0.1:{port}") }
}

async fn wait_ready(http: &reqwest::Client, base: &str, data_dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base}/_matrix/client/versions")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
    panic!("server at {base} did not become ready within 30 s; its log:\n{log}");
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(response.status().is_success(), "status {}", response.status());
    response.json().await.expect("JSON body")
}

/// Creates an empty PostgreSQL database for one run and returns its URL.
async fn fresh_postgres(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("lattice_crash_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PostgreSQL");
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&mut conn).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&name);
    url.to_string()
}

async fn acknowledged_sends_survive(database_url: Option<String>) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = reqwest::Client::new();
    let mut server = start(data.path(), port, database_url.as_deref());
    let base = server.base.clone();
    wait_ready(&http, &base, data.path()).await;

    let login = post(
        &http,
        format!("{base}/_matrix/client/v3/register"),
        None,
        json!({ "username": "writer", "password": "pw", "auth": { "type": "m.login.dummy" } }),
    )
    .await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let room =
        post(&http, format!("{base}/_matrix/client/v3/createRoom"), Some(&token), json!({ "name": "crash" })).await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();

    // 16 senders send until 400 sends are acknowledged; then the server is killed at once.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let target = 400;
    let mut senders = Vec::new();
    for sender in 0..16 {
        let http = http.clone();
        let base = base.clone();
        let token = token.clone();
        let room_id = room_id.clone();
        let acknowledged = acknowledged.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..1000 {
                let url = format!(
                    "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/s{sender}-{n}",
                    percent_encoding::utf8_percent_encode(&room_id, percent_encoding::NON_ALPHANUMERIC)
                );
                let Ok(response) = http
                    .put(url)
                    .bearer_auth(&token)
                    .json(&json!({ "msgtype": "m.text", "body": format!("{sender}-{n}") }))
                    .send()
                    .await
                else {
                    return;
                };
                if !response.status().is_success() {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                let event_id = body["event_id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push(event_id);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < target {
        assert!(Instant::now() < deadline, "sends were not acknowledged in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.child.kill().expect("SIGKILL the server");
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    server.child.wait().unwrap();
    for sender in senders {
        let _ = sender.await;
    }
    assert!(acknowledged.len() >= target, "burst acknowledged {} sends", acknowledged.len());

    // Restart on the same database; the old access token still works.
    let mut server = start(data.path(), port, database_url.as_deref());
    wait_ready(&http, &base, data.path()).await;
    let mut seen = HashSet::new();
    let mut from: Option<String> = None;
    loop {
        let mut url = format!(
            "{base}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
            percent_encoding::utf8_percent_encode(&room_id, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Some(from) = &from {
            url.push_str(&format!("&from={from}"));
        }
        let page: Value = http.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        for event in page["chunk"].as_array().expect("chunk") {
            seen.insert(event["event_id"].as_str().unwrap().to_owned());
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !seen.contains(*id)).collect();
    server.child.kill().ok();
    server.child.wait().ok();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill_sqlite() {
    acknowledged_sends_survive(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill_postgres() {
    let Ok(admin) = std::env::var("LATTICE_TEST_POSTGRES_URL") else {
        eprintln!("LATTICE_TEST_POSTGRES_URL is not set: the PostgreSQL crash test does not run");
        return;
    };
    let url = fresh_postgres(&admin).await;
    acknowledged_sends_survive(Some(url)).await;
    // Left behind only when the test fails, for a look at what was stored.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
    let name = format!("lattice_crash_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .expect("drop the crash test's database");
}
