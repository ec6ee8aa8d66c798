//! Load benchmark: runs the release `lattice` binary as its own process and
//! measures it over loopback HTTP, as clients see it.
//!
//! `cargo bench --bench load` runs every scenario; name scenarios to run only
//! those: `cargo bench --bench load -- send delivery fanout initial-sync`.
//! Figures go to standard output as a Markdown table.
//!
//! Each server runs on SQLite in a temporary directory. With
//! `LATTICE_BENCH_POSTGRES_URL` set (e.g. `postgres://postgres@127.0.0.1:5432/postgres`),
//! each runs on a new database of that PostgreSQL server instead, which is
//! dropped when the server stops.
//!
//! Scenarios:
//! - `send`: 16 concurrent senders, 8 in DM rooms and 8 in two 50-member rooms,
//!   500 messages each; throughput and request latency percentiles; resident
//!   memory after start and at peak.
//! - `delivery`: a DM message from send to the other member's waiting `/sync`.
//! - `fanout`: a message in a 50-member room to every member's waiting `/sync`.
//! - `initial-sync`: initial `/sync` of a user in 200 rooms with 20 messages
//!   each, timeline limit 10.
//! - `policy`: the `send` scenario and 40 invites of connections into one
//!   room, run once with the `open` policy and once with `professional`
//!   (limits far above what the run reaches, every sender and invitee a
//!   connection), with the overhead of `professional` in percent.
//!   `LATTICE_BENCH_POLICY_ROUNDS=N` repeats the pair N times, alternating
//!   the policies, and adds the overhead of the medians.
//! - `push`: the `send` scenario with the `open` policy, run once with push
//!   rule evaluation switched off (`push.enabled = false`) and once with it on
//!   (every member with the default rules), with the overhead in percent.
//!   `LATTICE_BENCH_PUSH_ROUNDS=N` repeats the pair N times, alternating which
//!   runs first, and adds the overhead of the medians.
//! - `degree-metrics`: a user with 5,000 connections (each requested by the
//!   other user with a first message, 1 in 10 answered); median and max of 20
//!   runs of `GET .../degree/{user}` for a 2nd-degree user and of
//!   `GET .../metrics`. Set-up stops after 5 minutes and the figures then
//!   name the number of connections made.
//! - `media`: 10 uploads and 10 downloads of a 10 MiB file, throughput and the
//!   server's resident memory before and at peak; then the thumbnailing of a
//!   12-megapixel JPEG to 320x240 (both methods), in this process, 5 runs each.
//! - `appservice`: an application service interested in 1,000 rooms (its
//!   non-exclusive user namespace covers their 16 senders); the senders send
//!   8,000 messages across those rooms. Events per second that reach the
//!   in-process application service, its lag after the last send, and the
//!   send throughput with the application service up, down (connection
//!   refused) and not registered; then the delivery rate of the 8,000-message
//!   backlog that builds up while it answers 503 and drains once it is back.
//! - `federation`: inbound `/send` of 40 transactions of 50 `m.room.message`
//!   PDUs into a room with 50 members from 3 servers (simulated by this
//!   process, which signs the PDUs and publishes the keys over TLS), in
//!   PDUs per second; then 200 single-PDU transactions, each to the local
//!   member's waiting `/sync`, p50 and p99 (see `load/federation.rs`).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;

#[path = "load/federation.rs"]
mod federation;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
    /// `(admin URL, database name)` of the server's PostgreSQL database.
    postgres: Option<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((admin_url, name)) = &self.postgres {
            run_postgres(admin_url, &format!("DROP DATABASE IF EXISTS {name}"));
        }
    }
}

fn start_server() -> Server {
    start_server_with(&[])
}

/// Returns the URL of the PostgreSQL server to run the scenarios on, from
/// `LATTICE_BENCH_POSTGRES_URL`, or `None` for SQLite.
fn postgres_admin_url() -> Option<String> {
    std::env::var("LATTICE_BENCH_POSTGRES_URL").ok().filter(|url| !url.is_empty())
}

/// Runs one statement on the PostgreSQL server of `admin_url`.
fn run_postgres(admin_url: &str, statement: &str) {
    use sqlx::Connection;
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut conn).await.expect(statement);
        })
    });
}

/// Creates an empty PostgreSQL database for one server. Returns its URL and name.
fn fresh_postgres_database(admin_url: &str) -> (String, String) {
    let suffix: u64 = rand::random();
    let name = format!("lattice_bench_{suffix:016x}");
    run_postgres(admin_url, &format!("CREATE DATABASE {name}"));
    let mut url = url::Url::parse(admin_url).expect("valid PostgreSQL URL");
    url.set_path(&name);
    (url.to_string(), name)
}

/// Starts the server with extra `LATTICE_*` variables, such as policy settings.
fn start_server_with(settings: &[(&str, &str)]) -> Server {
    let data = tempfile::tempdir().expect("temporary directory");
    let postgres = postgres_admin_url().map(|admin| {
        let (url, name) = fresh_postgres_database(&admin);
        (url, (admin, name))
    });
    // Without a PostgreSQL URL the server uses SQLite in its data directory.
    let database = postgres.as_ref().map(|(url, _)| ("LATTICE_DATABASE__URL", url.as_str()));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binary = std::env::var("LATTICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lattice").to_owned());
    let child = Command::new(binary)
        .arg("serve")
        // Plain Matrix unless a scenario selects the professional policy.
        .env("LATTICE_POLICY__NAME", "open")
        .envs(settings.iter().copied())
        .env("LATTICE_DATA_DIR", data.path())
        .envs(database)
        .env("LATTICE_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
        .env("LATTICE_RATE_LIMITS__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the lattice binary");
    Server { child, base: format!("http://127.0.0.1:{port}"), _data: data, postgres: postgres.map(|(_, db)| db) }
}

/// Starts the server with a configuration file (for settings that the
/// environment cannot express, such as host overrides).
fn start_server_config(config: &str) -> Server {
    let data = tempfile::tempdir().expect("temporary directory");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binary = std::env::var("LATTICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lattice").to_owned());
    let child = Command::new(binary)
        .args(["serve", "--config", config])
        .env("LATTICE_POLICY__NAME", "open")
        .env("LATTICE_DATA_DIR", data.path())
        .env("LATTICE_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
        .env("LATTICE_RATE_LIMITS__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the lattice binary");
    Server { child, base: format!("http://127.0.0.1:{port}"), _data: data, postgres: None }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `(current, peak)` resident memory of a process in MiB, from /proc.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reads the CPU time (user and system) that a process has used so far, in
/// seconds, from /proc. The kernel counts it in clock ticks (`USER_HZ`, 100
/// per second on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Clone)]
struct User {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl User {
    async fn register(http: &reqwest::Client, base: &str, name: String) -> User {
        let body: Value = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&json!({ "username": name, "password": "bench", "auth": { "type": "m.login.dummy" } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        User {
            http: http.clone(),
            base: base.to_owned(),
            token: body["access_token"].as_str().expect("access token").to_owned(),
            user_id: body["user_id"].as_str().unwrap().to_owned(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn create_room(&self, invite: &[String]) -> String {
        let body = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(json!({ "invite": invite, "preset": "private_chat" })),
            )
            .await;
        body["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends a connection request as Element's "Start chat" does and returns the room id.
    async fn request_connection(&self, invitee: &str) -> String {
        let body = json!({ "invite": [invitee], "is_direct": true, "preset": "trusted_private_chat" });
        let body = self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(body)).await;
        body["room_id"].as_str().unwrap().to_owned()
    }

    async fn invite(&self, room: &str, user_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
        self.call(reqwest::Method::POST, &path, Some(json!({ "user_id": user_id }))).await;
    }

    async fn join(&self, room: &str) {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{}", enc(room)), Some(json!({}))).await;
    }

    async fn send(&self, room: &str, txn: &str, text: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        self.call(reqwest::Method::PUT, &path, Some(json!({ "msgtype": "m.text", "body": text }))).await;
    }

    async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        let filter = enc(r#"{"room":{"timeline":{"limit":10}}}"#);
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={filter}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        self.call(reqwest::Method::GET, &path, None).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if http.get(format!("{base}/_matrix/client/versions")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start");
}

async fn register_many(http: &reqwest::Client, base: &str, prefix: &str, count: usize) -> Vec<User> {
    let mut users = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let batch = join_all(chunk.iter().map(|i| User::register(http, base, format!("{prefix}{i}")))).await;
        users.extend(batch);
    }
    users
}

/// A room created by `members[0]` that every other member joined.
async fn group_room(members: &[User]) -> String {
    let invites: Vec<String> = members[1..].iter().map(|u| u.user_id.clone()).collect();
    let room = members[0].create_room(&invites).await;
    join_all(members[1..].iter().map(|m| m.join(&room))).await;
    room
}

/// Connects `hub` with every user of `others`: a request from `hub`, accepted by each.
async fn connect_all(hub: &User, others: &[User]) {
    for batch in others.chunks(8) {
        join_all(batch.iter().map(|other| async move {
            let room = hub.request_connection(&other.user_id).await;
            other.join(&room).await;
        }))
        .await;
    }
}

/// Figures of one run of the send workload.
struct SendRun {
    events: usize,
    elapsed: Duration,
    /// Sorted request latencies.
    latencies: Vec<Duration>,
    rss_start: f64,
    rss_setup_peak: f64,
    rss_peak: f64,
    /// CPU time of the server process during the send run, in seconds.
    server_cpu: f64,
}

impl SendRun {
    fn throughput(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU time per event, in microseconds.
    fn cpu_per_event_us(&self) -> f64 {
        self.server_cpu * 1e6 / self.events as f64
    }
}

async fn bench_send(http: &reqwest::Client) {
    let server = start_server();
    let run = run_send(http, &server, false).await;
    let total = run.events;
    println!(
        "| send: 16 senders, 8 DM + 8 in two 50-member rooms, {total} events | {:.0} events/s |",
        run.throughput()
    );
    println!(
        "| send: request latency p50 / p99 | {} / {} |",
        ms(percentile(&run.latencies, 0.5)),
        ms(percentile(&run.latencies, 0.99))
    );
    println!("| memory: resident after start | {:.1} MiB |", run.rss_start);
    println!("| memory: resident at the end of set-up (116 registrations, 10 rooms) | {:.1} MiB |", run.rss_setup_peak);
    println!("| memory: resident peak during the send run | {:.1} MiB |", run.rss_peak);
}

/// Runs the send workload. With `as_connections`, each DM room is a connection
/// request that its invitee accepted, and the creator of each 50-member room
/// is first connected with its 49 other members, as the `professional` policy
/// requires.
async fn run_send(http: &reqwest::Client, server: &Server, as_connections: bool) -> SendRun {
    wait_ready(http, &server.base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_start, _) = memory_mib(server.child.id());

    let dm_users = register_many(http, &server.base, "dm", 16).await;
    let group_a = register_many(http, &server.base, "ga", 50).await;
    let group_b = register_many(http, &server.base, "gb", 50).await;
    let mut rooms = Vec::new();
    for pair in dm_users.chunks(2) {
        let room = if as_connections {
            pair[0].request_connection(&pair[1].user_id).await
        } else {
            pair[0].create_room(&[pair[1].user_id.clone()]).await
        };
        pair[1].join(&room).await;
        rooms.push((pair[0].clone(), room.clone()));
        rooms.push((pair[1].clone(), room));
    }
    if as_connections {
        connect_all(&group_a[0], &group_a[1..]).await;
        connect_all(&group_b[0], &group_b[1..]).await;
    }
    let room_a = group_room(&group_a).await;
    let room_b = group_room(&group_b).await;
    // 8 DM senders, 4 senders in each 50-member room.
    let mut senders: Vec<(User, String)> = rooms.into_iter().step_by(2).collect();
    for i in 0..4 {
        senders.push((group_a[i].clone(), room_a.clone()));
        senders.push((group_b[i].clone(), room_b.clone()));
    }
    assert_eq!(senders.len(), 16);

    // Resets the peak resident size, so the figure covers the send run only.
    let _ = std::fs::write(format!("/proc/{}/clear_refs", server.child.id()), "5");
    let (_, rss_setup_peak) = memory_mib(server.child.id());
    let per_sender = 500;
    let cpu_start = cpu_seconds(server.child.id());
    let started = Instant::now();
    let tasks = senders.into_iter().enumerate().map(|(s, (user, room))| async move {
        let mut latencies = Vec::with_capacity(per_sender);
        for n in 0..per_sender {
            let t = Instant::now();
            user.send(&room, &format!("b{s}-{n}"), "benchmark message").await;
            latencies.push(t.elapsed());
        }
        latencies
    });
    let mut latencies: Vec<Duration> = join_all(tasks).await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    let server_cpu = cpu_seconds(server.child.id()) - cpu_start;
    latencies.sort();
    let (_, rss_peak) = memory_mib(server.child.id());
    SendRun { events: latencies.len(), elapsed, latencies, rss_start, rss_setup_peak, rss_peak, server_cpu }
}

/// Times 40 invites of connections into one room of the inviter, one at a
/// time. Returns the sorted latencies.
async fn run_invites(http: &reqwest::Client, server: &Server) -> Vec<Duration> {
    let users = register_many(http, &server.base, "inv", 41).await;
    let (inviter, invitees) = (&users[0], &users[1..]);
    connect_all(inviter, invitees).await;
    let room = inviter.create_room(&[]).await;
    let mut latencies = Vec::with_capacity(invitees.len());
    for invitee in invitees {
        let started = Instant::now();
        inviter.invite(&room, &invitee.user_id).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

/// Policy settings far above what the `policy` scenario reaches, so every
/// check runs and none rejects.
const PROFESSIONAL_GENEROUS: &[(&str, &str)] = &[
    ("LATTICE_POLICY__NAME", "professional"),
    ("LATTICE_POLICY__PENDING_MESSAGE_LIMIT", "1"),
    ("LATTICE_POLICY__MAX_GROUP_SIZE", "50"),
    ("LATTICE_POLICY__DAILY_MESSAGE_LIMIT", "1000000"),
    ("LATTICE_POLICY__WEEKLY_CONNECTION_REQUEST_LIMIT", "1000000"),
];

/// Rounds of the `policy` scenario, from `LATTICE_BENCH_POLICY_ROUNDS` (default 1).
fn policy_rounds() -> usize {
    std::env::var("LATTICE_BENCH_POLICY_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

/// Runs `open` then `professional` on fresh servers, `policy_rounds()` times,
/// so that both see the same load on a shared machine. Prints each run, each
/// round's overhead, and the overhead of the medians over all rounds.
async fn bench_policy(http: &reqwest::Client) {
    let rounds = policy_rounds();
    // Per policy: send throughput, send p50 and invite p50 of each round.
    let mut figures: [Vec<(f64, Duration, Duration)>; 2] = [Vec::new(), Vec::new()];
    let overhead = |open: f64, professional: f64| (professional / open - 1.0) * 100.0;
    for round in 1..=rounds {
        for (index, (name, settings)) in [("open", &[][..]), ("professional", PROFESSIONAL_GENEROUS)].iter().enumerate()
        {
            let server = start_server_with(settings);
            let send = run_send(http, &server, true).await;
            let invites = run_invites(http, &server).await;
            println!(
                "| policy round {round} {name}: send, 16 senders, {} events, throughput / p50 / p99 | {:.0} events/s / {} / {} |",
                send.events,
                send.throughput(),
                ms(percentile(&send.latencies, 0.5)),
                ms(percentile(&send.latencies, 0.99))
            );
            println!(
                "| policy round {round} {name}: invite of a connection into a room, 40 invites, p50 / p99 | {} / {} |",
                ms(percentile(&invites, 0.5)),
                ms(percentile(&invites, 0.99))
            );
            figures[index].push((send.throughput(), percentile(&send.latencies, 0.5), percentile(&invites, 0.5)));
        }
        let (open, professional) = (figures[0][round - 1], figures[1][round - 1]);
        println!(
            "| policy round {round} overhead of professional: send throughput / send p50 / invite p50 | {:+.1} % / {:+.1} % / {:+.1} % |",
            overhead(open.0, professional.0),
            overhead(open.1.as_secs_f64(), professional.1.as_secs_f64()),
            overhead(open.2.as_secs_f64(), professional.2.as_secs_f64())
        );
    }
    if rounds > 1 {
        let median = |values: Vec<f64>| {
            let mut values = values;
            values.sort_by(f64::total_cmp);
            let middle = values.len() / 2;
            if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
        };
        let medians = |runs: &[(f64, Duration, Duration)]| {
            (
                median(runs.iter().map(|r| r.0).collect()),
                median(runs.iter().map(|r| r.1.as_secs_f64()).collect()),
                median(runs.iter().map(|r| r.2.as_secs_f64()).collect()),
            )
        };
        let (open, professional) = (medians(&figures[0]), medians(&figures[1]));
        println!(
            "| policy, median of {rounds} rounds, open / professional: send throughput | {:.0} / {:.0} events/s |",
            open.0, professional.0
        );
        println!(
            "| policy, median of {rounds} rounds, open / professional: send p50 / invite p50 | {:.2} / {:.2} ms, {:.2} / {:.2} ms |",
            open.1 * 1000.0,
            professional.1 * 1000.0,
            open.2 * 1000.0,
            professional.2 * 1000.0
        );
        println!(
            "| policy overhead of professional, medians of {rounds} rounds: send throughput / send p50 / invite p50 | {:+.1} % / {:+.1} % / {:+.1} % |",
            overhead(open.0, professional.0),
            overhead(open.1, professional.1),
            overhead(open.2, professional.2)
        );
    }
}

/// Rounds of the `push` scenario, from `LATTICE_BENCH_PUSH_ROUNDS` (default 1).
fn push_rounds() -> usize {
    std::env::var("LATTICE_BENCH_PUSH_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

/// Reads the 1-minute load average of the machine from /proc/loadavg.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg.split_whitespace().next().unwrap_or("unknown").to_owned()
}

/// Returns the median of `values`, or NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Runs the `send` workload with push rule evaluation off and on, on fresh
/// servers, `push_rounds()` times. Odd rounds run off first and even rounds
/// on first, so that a drift in the machine's load affects both alike.
/// Prints each run with the load average at its start, each round's
/// overhead, and the overhead of the medians over all rounds.
async fn bench_push(http: &reqwest::Client) {
    let rounds = push_rounds();
    // Per setting (off, on): send throughput, send p50 and server CPU per event of each round.
    let mut figures: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let overhead = |off: f64, on: f64| (on / off - 1.0) * 100.0;
    for round in 1..=rounds {
        let order: [usize; 2] = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for index in order {
            let (name, enabled) = [("off", "false"), ("on", "true")][index];
            let load = load_average();
            let server = start_server_with(&[("LATTICE_POLICY__NAME", "open"), ("LATTICE_PUSH__ENABLED", enabled)]);
            let send = run_send(http, &server, false).await;
            println!(
                "| push round {round} evaluation {name}: send, 16 senders, {} events, throughput / p50 / p99 / server CPU per event (load average {load}) | {:.0} events/s / {} / {} / {:.0} µs |",
                send.events,
                send.throughput(),
                ms(percentile(&send.latencies, 0.5)),
                ms(percentile(&send.latencies, 0.99)),
                send.cpu_per_event_us()
            );
            figures[index].push((
                send.throughput(),
                percentile(&send.latencies, 0.5).as_secs_f64(),
                send.cpu_per_event_us(),
            ));
        }
        let (off, on) = (figures[0][round - 1], figures[1][round - 1]);
        println!(
            "| push round {round} evaluation overhead: send throughput / send p50 / server CPU per event | {:+.1} % / {:+.1} % / {:+.1} % |",
            overhead(off.0, on.0),
            overhead(off.1, on.1),
            overhead(off.2, on.2)
        );
    }
    if rounds > 1 {
        let medians = |runs: &[(f64, f64, f64)]| {
            (
                median(runs.iter().map(|r| r.0).collect()),
                median(runs.iter().map(|r| r.1).collect()),
                median(runs.iter().map(|r| r.2).collect()),
            )
        };
        let (off, on) = (medians(&figures[0]), medians(&figures[1]));
        let round_overheads: Vec<f64> =
            figures[0].iter().zip(&figures[1]).map(|(off, on)| overhead(off.0, on.0)).collect();
        println!(
            "| push, median of {rounds} rounds, evaluation off / on: send throughput / send p50 / server CPU per event | {:.0} / {:.0} events/s, {:.2} / {:.2} ms, {:.0} / {:.0} µs |",
            off.0,
            on.0,
            off.1 * 1000.0,
            on.1 * 1000.0,
            off.2,
            on.2
        );
        println!(
            "| push evaluation overhead, medians of {rounds} rounds: send throughput / send p50 / median of the rounds' throughput overheads | {:+.1} % / {:+.1} % / {:+.1} % |",
            overhead(off.0, on.0),
            overhead(off.1, on.1),
            median(round_overheads)
        );
    }
}

const CONNECTIONS_PREFIX: &str = "/_matrix/client/unstable/dev.lattice.connections";

/// Times `runs` sequential GETs of `path`. Returns the sorted latencies.
async fn time_get(user: &User, path: &str, runs: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        user.call(reqwest::Method::GET, path, None).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

async fn bench_degree_metrics(http: &reqwest::Client) {
    const CONNECTIONS: usize = 5_000;
    const BATCH: usize = 32;
    const SETUP_BUDGET: Duration = Duration::from_secs(300);
    let server = start_server_with(&[
        ("LATTICE_POLICY__NAME", "professional"),
        ("LATTICE_POLICY__WEEKLY_CONNECTION_REQUEST_LIMIT", "0"),
        ("LATTICE_POLICY__DAILY_MESSAGE_LIMIT", "0"),
    ]);
    wait_ready(http, &server.base).await;
    let setup_started = Instant::now();
    let hub = User::register(http, &server.base, "hub".into()).await;

    // Each batch registers its users, lets each send a request with a first
    // message to the hub, and the hub accepts. The hub replies in 1 room of 10.
    let mut leaves: Vec<User> = Vec::new();
    let mut batch_start = 0;
    while batch_start < CONNECTIONS && setup_started.elapsed() < SETUP_BUDGET {
        let batch_end = (batch_start + BATCH).min(CONNECTIONS);
        let users =
            join_all((batch_start..batch_end).map(|i| User::register(http, &server.base, format!("leaf{i}")))).await;
        join_all(users.iter().enumerate().map(|(offset, leaf)| {
            let hub = &hub;
            async move {
                let room = leaf.request_connection(&hub.user_id).await;
                leaf.send(&room, "note", "Hello, could we connect?").await;
                hub.join(&room).await;
                if (batch_start + offset) % 10 == 0 {
                    hub.send(&room, "reply", "Thanks, glad to connect.").await;
                }
            }
        }))
        .await;
        leaves.extend(users);
        batch_start = batch_end;
    }
    let made = leaves.len();
    let setup = setup_started.elapsed();

    // A user connected with one of the hub's connections only: 2nd degree.
    let far = User::register(http, &server.base, "far".into()).await;
    let room = far.request_connection(&leaves[0].user_id).await;
    leaves[0].join(&room).await;

    let degree_path = format!("{CONNECTIONS_PREFIX}/degree/{}", enc(&far.user_id));
    let degree = hub.call(reqwest::Method::GET, &degree_path, None).await;
    assert_eq!(degree["degree"], 2, "{degree}");
    let degree_samples = time_get(&hub, &degree_path, 20).await;
    let metrics_path = format!("{CONNECTIONS_PREFIX}/metrics");
    let metrics = hub.call(reqwest::Method::GET, &metrics_path, None).await;
    assert_eq!(metrics["conversations_received"], made, "{metrics}");
    let metrics_samples = time_get(&hub, &metrics_path, 20).await;

    println!(
        "| degree-metrics: set-up of {made} connections with a first message each | {:.0} s |",
        setup.as_secs_f64()
    );
    println!(
        "| degree-metrics: GET degree of a 2nd-degree user, hub with {made} connections, 20 runs, median / max | {} / {} |",
        ms(percentile(&degree_samples, 0.5)),
        ms(*degree_samples.last().unwrap())
    );
    println!(
        "| degree-metrics: GET metrics, {made} received conversations, 20 runs, median / max | {} / {} |",
        ms(percentile(&metrics_samples, 0.5)),
        ms(*metrics_samples.last().unwrap())
    );
}

async fn bench_delivery(http: &reqwest::Client) {
    let server = start_server();
    wait_ready(http, &server.base).await;
    let users = register_many(http, &server.base, "d", 2).await;
    let (alice, bob) = (users[0].clone(), users[1].clone());
    let room = alice.create_room(&[bob.user_id.clone()]).await;
    bob.join(&room).await;
    let mut since = bob.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let mut samples = Vec::new();
    for n in 0..300 {
        let waiter = {
            let bob = bob.clone();
            let since = since.clone();
            tokio::spawn(async move {
                let body = bob.sync(Some(&since), 10_000).await;
                (Instant::now(), body)
            })
        };
        // Give the long-poll time to reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent_at = Instant::now();
        alice.send(&room, &format!("d{n}"), "ping").await;
        let (arrived, body) = waiter.await.unwrap();
        samples.push(arrived.duration_since(sent_at));
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    samples.sort();
    println!(
        "| delivery: DM send to waiting /sync, 300 messages, p50 / p99 | {} / {} |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
}

async fn bench_fanout(http: &reqwest::Client) {
    let server = start_server();
    wait_ready(http, &server.base).await;
    let members = register_many(http, &server.base, "f", 50).await;
    let room = group_room(&members).await;
    let members = Arc::new(members);
    let mut tokens: Vec<String> = Vec::new();
    for member in members.iter() {
        tokens.push(member.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned());
    }
    let mut samples = Vec::new();
    for n in 0..40 {
        let waiters: Vec<_> = members
            .iter()
            .zip(tokens.iter())
            .map(|(member, since)| {
                let member = member.clone();
                let since = since.clone();
                tokio::spawn(async move {
                    let body = member.sync(Some(&since), 10_000).await;
                    (Instant::now(), body["next_batch"].as_str().unwrap().to_owned())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent_at = Instant::now();
        members[n % 50].send(&room, &format!("f{n}"), "to everyone").await;
        tokens.clear();
        for waiter in waiters {
            let (arrived, next) = waiter.await.unwrap();
            samples.push(arrived.duration_since(sent_at));
            tokens.push(next);
        }
    }
    samples.sort();
    println!(
        "| fanout: 50-member room, send to each waiting /sync, 40 messages x 50 members, p50 / p99 | {} / {} |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
}

async fn bench_initial_sync(http: &reqwest::Client) {
    let server = start_server();
    wait_ready(http, &server.base).await;
    let users = register_many(http, &server.base, "i", 2).await;
    let (owner, other) = (users[0].clone(), users[1].clone());
    for r in 0..200 {
        let room = owner.create_room(&[other.user_id.clone()]).await;
        other.join(&room).await;
        for n in 0..20 {
            let sender = if n % 2 == 0 { &owner } else { &other };
            sender.send(&room, &format!("i{r}-{n}"), "history").await;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let body = owner.sync(None, 0).await;
        samples.push(t.elapsed());
        assert_eq!(body["rooms"]["join"].as_object().unwrap().len(), 200);
    }
    samples.sort();
    println!(
        "| initial /sync: 200 rooms x 20 messages, timeline limit 10, 10 runs, median / max | {} / {} |",
        ms(percentile(&samples, 0.5)),
        ms(*samples.last().unwrap())
    );
}

/// Counts the `m.room.message` events of the transactions an in-process
/// application service receives, and the time the last one arrived.
#[derive(Default)]
struct BridgeCounter {
    messages: std::sync::atomic::AtomicUsize,
    /// Whether the bridge returns 503, as an application service that is down does.
    refusing: std::sync::atomic::AtomicBool,
    first: std::sync::Mutex<Option<Instant>>,
    last: std::sync::Mutex<Option<Instant>>,
}

/// Starts an application service on a loopback port that acknowledges every transaction.
async fn start_counting_bridge() -> (Arc<BridgeCounter>, String) {
    let counter = Arc::new(BridgeCounter::default());
    let state = counter.clone();
    let app = axum::Router::new().route(
        "/_matrix/app/v1/transactions/{txn_id}",
        axum::routing::put(move |body: axum::body::Bytes| {
            let counter = state.clone();
            async move {
                if counter.refusing.load(std::sync::atomic::Ordering::SeqCst) {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})));
                }
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let messages = body["events"]
                    .as_array()
                    .map(|events| events.iter().filter(|e| e["type"] == "m.room.message").count())
                    .unwrap_or(0);
                counter.messages.fetch_add(messages, std::sync::atomic::Ordering::SeqCst);
                counter.first.lock().unwrap().get_or_insert_with(Instant::now);
                *counter.last.lock().unwrap() = Some(Instant::now());
                (axum::http::StatusCode::OK, axum::Json(json!({})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (counter, url)
}

/// Writes a registration whose non-exclusive user namespace covers the users named `asb...`.
fn write_registration(dir: &std::path::Path, url: &str) -> String {
    let path = dir.join("bench-registration.yaml");
    let yaml = format!(
        "id: bench\nurl: \"{url}\"\nas_token: bench-as-token\nhs_token: bench-hs-token\n\
         sender_localpart: _bench_bot\nrate_limited: false\n\
         namespaces:\n  users:\n    - exclusive: false\n      regex: \"@asb.*\"\n"
    );
    std::fs::write(&path, yaml).unwrap();
    format!("[\"{}\"]", path.display())
}

/// Creates 1,000 rooms among 16 senders and sends 500 messages per sender,
/// round-robin over its rooms. Returns the send throughput and when the sends began.
async fn run_appservice_sends(http: &reqwest::Client, server: &Server) -> (f64, Instant) {
    wait_ready(http, &server.base).await;
    let senders = register_many(http, &server.base, "asb", 16).await;
    let rooms: Vec<Vec<String>> = join_all(senders.iter().enumerate().map(|(index, sender)| async move {
        let count = 1000 / 16 + usize::from(index < 1000 % 16);
        let mut rooms = Vec::with_capacity(count);
        for _ in 0..count {
            rooms.push(sender.create_room(&[]).await);
        }
        rooms
    }))
    .await;
    assert_eq!(rooms.iter().map(Vec::len).sum::<usize>(), 1000);

    let per_sender = 500;
    let started = Instant::now();
    join_all(senders.iter().zip(&rooms).enumerate().map(|(s, (sender, rooms))| async move {
        for n in 0..per_sender {
            sender.send(&rooms[n % rooms.len()], &format!("a{s}-{n}"), "bridged benchmark message").await;
        }
    }))
    .await;
    let throughput = (16 * per_sender) as f64 / started.elapsed().as_secs_f64();
    (throughput, started)
}

async fn bench_appservice(http: &reqwest::Client) {
    let files = tempfile::tempdir().unwrap();

    let (counter, url) = start_counting_bridge().await;
    let registrations = write_registration(files.path(), &url);
    let server = start_server_with(&[("LATTICE_APPSERVICE__REGISTRATIONS", registrations.as_str())]);
    let (send_up, started) = run_appservice_sends(http, &server).await;
    let sends_done = Instant::now();
    // Waits for the application service to catch up, for at most two minutes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.messages.load(std::sync::atomic::Ordering::SeqCst) < 8000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered = counter.messages.load(std::sync::atomic::Ordering::SeqCst);
    let last = counter.last.lock().unwrap().unwrap_or(sends_done);
    let delivery_rate = delivered as f64 / last.duration_since(started).as_secs_f64();
    let lag = last.saturating_duration_since(sends_done);
    drop(server);

    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down_dir = tempfile::tempdir().unwrap();
    let registrations = write_registration(down_dir.path(), &format!("http://{closed}"));
    let server = start_server_with(&[("LATTICE_APPSERVICE__REGISTRATIONS", registrations.as_str())]);
    let (send_down, _) = run_appservice_sends(http, &server).await;
    drop(server);

    let server = start_server();
    let (send_none, _) = run_appservice_sends(http, &server).await;
    drop(server);

    // Catch-up: the application service is down during the sends, then comes back and receives the backlog.
    // The rate runs from its first acknowledged transaction to its last, so it shows the delivery capacity.
    let (backlog, url) = start_counting_bridge().await;
    backlog.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
    let backlog_dir = tempfile::tempdir().unwrap();
    let registrations = write_registration(backlog_dir.path(), &url);
    let server = start_server_with(&[("LATTICE_APPSERVICE__REGISTRATIONS", registrations.as_str())]);
    run_appservice_sends(http, &server).await;
    backlog.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(180);
    while backlog.messages.load(std::sync::atomic::Ordering::SeqCst) < 8000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let caught_up = backlog.messages.load(std::sync::atomic::Ordering::SeqCst);
    let first = *backlog.first.lock().unwrap();
    let last = *backlog.last.lock().unwrap();
    let catch_up_rate = match (first, last) {
        (Some(first), Some(last)) if last > first => caught_up as f64 / last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    drop(server);

    println!(
        "| appservice: messages delivered to an application service in 1,000 rooms | {delivered} of 8,000, {delivery_rate:.0} events/s |"
    );
    println!("| appservice: delivery lag after the last send | {} |", ms(lag));
    println!(
        "| appservice: backlog delivered after the application service comes back | {caught_up} of 8,000, {catch_up_rate:.0} events/s |"
    );
    println!(
        "| appservice: send throughput with the application service up / down / not registered | {send_up:.0} / {send_down:.0} / {send_none:.0} events/s |"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap();
        println!("| measurement | result |");
        println!("| --- | --- |");
        if wanted("send") {
            bench_send(&http).await;
        }
        if wanted("delivery") {
            bench_delivery(&http).await;
        }
        if wanted("fanout") {
            bench_fanout(&http).await;
        }
        if wanted("initial-sync") {
            bench_initial_sync(&http).await;
        }
        if wanted("policy") {
            bench_policy(&http).await;
        }
        if wanted("push") {
            bench_push(&http).await;
        }
        if wanted("degree-metrics") {
            bench_degree_metrics(&http).await;
        }
        if wanted("media") {
            bench_media(&http).await;
        }
        if wanted("appservice") {
            bench_appservice(&http).await;
        }
        if wanted("federation") {
            federation::bench_federation(&http).await;
        }
    });
}

async fn bench_media(http: &reqwest::Client) {
    const SIZE: usize = 10 * 1024 * 1024;
    const RUNS: usize = 10;
    let server = start_server();
    wait_ready(http, &server.base).await;
    let user = register_many(http, &server.base, "m", 1).await.remove(0);
    // Incompressible content, so no layer can take a shortcut.
    let mut file = vec![0u8; SIZE];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in file.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let file = bytes::Bytes::from(file);
    let pid = server.child.id();
    let (before, _) = memory_mib(pid);

    let mut uris = Vec::new();
    let started = Instant::now();
    for n in 0..RUNS {
        let response = http
            .post(format!("{}/_matrix/media/v3/upload?filename=f{n}.bin", server.base))
            .bearer_auth(&user.token)
            .header("Content-Type", "application/octet-stream")
            .body(file.clone())
            .send()
            .await
            .expect("upload");
        assert!(response.status().is_success(), "upload: {}", response.status());
        let body: Value = response.json().await.unwrap();
        uris.push(body["content_uri"].as_str().expect("content_uri").to_owned());
    }
    let upload = started.elapsed();

    let started = Instant::now();
    for uri in &uris {
        let path = uri.trim_start_matches("mxc://");
        let response = http
            .get(format!("{}/_matrix/client/v1/media/download/{path}", server.base))
            .bearer_auth(&user.token)
            .send()
            .await
            .expect("download");
        assert!(response.status().is_success(), "download: {}", response.status());
        let body = response.bytes().await.expect("download body");
        assert_eq!(body.len(), SIZE);
    }
    let download = started.elapsed();
    let (_, peak) = memory_mib(pid);
    let mib = (SIZE * RUNS) as f64 / (1024.0 * 1024.0);
    println!("| media: {RUNS} uploads of 10 MiB, throughput | {:.0} MiB/s |", mib / upload.as_secs_f64());
    println!("| media: {RUNS} downloads of 10 MiB, throughput | {:.0} MiB/s |", mib / download.as_secs_f64());
    println!("| media: server memory before / peak during transfers | {before:.1} / {peak:.1} MiB |");

    // A 12-megapixel photo-like JPEG: smooth gradients with some texture.
    let (width, height) = (4000u32, 3000u32);
    let photo = image::RgbImage::from_fn(width, height, |x, y| {
        let texture = ((x * 7 + y * 13) % 31) as u8;
        image::Rgb([(x * 255 / width) as u8 ^ texture, (y * 255 / height) as u8, 128u8.wrapping_add(texture)])
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("photo.jpg");
    image::DynamicImage::ImageRgb8(photo).save_with_format(&path, image::ImageFormat::Jpeg).expect("write JPEG");
    for method in [lattice::media::thumbnail::Method::Scale, lattice::media::thumbnail::Method::Crop] {
        let mut samples = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let thumbnail = lattice::media::thumbnail::make(&path, 320, 240, method).expect("thumbnail");
            samples.push(started.elapsed());
            assert!(matches!(thumbnail, lattice::media::thumbnail::Thumbnail::Encoded { .. }));
        }
        samples.sort();
        println!(
            "| media: thumbnail of a 12 MP JPEG to 320x240, {}, 5 runs, median / max | {} / {} |",
            method.as_str(),
            ms(percentile(&samples, 0.5)),
            ms(*samples.last().unwrap())
        );
    }
}
