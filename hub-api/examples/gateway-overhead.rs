//! The gateway's own cost, without a model and without Python (issue 19), for
//! `scripts/bench/gateway_overhead.sh`: a stand-in worker that answers a fixed embeddings
//! body, registered straight in the hub's database, called directly and through the
//! gateway, alternated, by C closed-loop clients at each concurrency level.
//!
//! ```text
//! gateway-overhead --hub URL --token TOKEN --psql "PSQL ARGS" [--requests N] [--concurrency 1,16] [--nginx]
//! ```
//!
//! `--nginx` adds the peer: nginx (Debian's, from `PATH`) as a plain reverse proxy in front of
//! the same stand-in (two worker processes like the hub's two HTTP workers, keep-alive
//! upstream connections, no access log, no auth, no metering), called in the same rotation, so
//! the run prints what one proxy hop costs on this machine next to what the gateway adds.
//!
//! It replaces `gateway_overhead.py` as the default because, on 2 cores, 16 Python client
//! threads and a Python stand-in took the CPU the hub needed: the added p99 at 16 (18.7 ms)
//! measured Python. Here the clients share one single-threaded tokio runtime, and the
//! stand-in one actix worker thread, so the whole harness costs about one core at most.
//! The measurement is the Python script's, kept so the two can be compared
//! (`gateway_overhead.sh --python`): each client holds one keep-alive connection to the hub
//! and one to the stand-in, warms both with 20 calls, then makes `N / C` pairs of calls,
//! gateway first on even `i + k` and direct first on odd; the added latency is the
//! difference of the percentiles (gateway p50 − direct p50, gateway p99 − direct p99),
//! with the same nearest-rank rule (`round(q × (n − 1))`, ties to even).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Session advisory lock the hub's scheduler leader holds; holding it keeps the
/// scheduler on standby, so it does not touch the hand-made replica.
const LEADER_LOCK: i64 = 0x5041_4444_4f43_4b01;

const BODY: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.6,0.8]}],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
const REQUEST: &str = r#"{"input":["How fast is the gateway?"]}"#;

struct Args {
    hub: String,
    token: String,
    psql: Vec<String>,
    requests: usize,
    concurrency: Vec<usize>,
    nginx: bool,
    /// The hub's process id: its CPU time per gateway call is reported.
    hub_pid: Option<u32>,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut hub, mut token, mut psql) = (None, None, None);
    let (mut requests, mut concurrency) = (2000, vec![1, 16]);
    let mut nginx = false;
    let mut hub_pid = None;
    while let Some(flag) = it.next() {
        if flag == "--nginx" {
            nginx = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--hub" => hub = Some(value),
            "--token" => token = Some(value),
            "--psql" => psql = Some(value.split_whitespace().map(str::to_string).collect()),
            "--requests" => requests = value.parse()?,
            "--hub-pid" => hub_pid = Some(value.parse()?),
            "--concurrency" => {
                concurrency = value
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let missing = |f: &str| anyhow::anyhow!("missing {f}");
    anyhow::ensure!(
        concurrency.iter().all(|&c| c > 0 && c <= requests),
        "--concurrency levels must be between 1 and --requests"
    );
    Ok(Args {
        hub: hub.ok_or_else(|| missing("--hub"))?,
        token: token.ok_or_else(|| missing("--token"))?,
        psql: psql
            .filter(|p: &Vec<String>| !p.is_empty())
            .ok_or_else(|| missing("--psql"))?,
        requests,
        concurrency,
        nginx,
        hub_pid,
    })
}

/// The stand-in worker: any POST with the gateway secret gets the fixed body and the
/// token count header the gateway meters; anything else a 401.
async fn standin(req: HttpRequest, _body: web::Bytes, secret: web::Data<String>) -> HttpResponse {
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(secret.as_str());
    if !authorized {
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("X-Input-Tokens", "5"))
        .body(BODY)
}

/// Starts the stand-in on one actix worker thread; its port.
fn start_standin(secret: String) -> anyhow::Result<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("standin".into())
        .spawn(move || {
            let sys = actix_web::rt::System::new();
            let started = tx.clone();
            let run = sys.block_on(async move {
                let secret = web::Data::new(secret);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(secret.clone())
                        .default_service(web::post().to(standin))
                })
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))?;
                let port = server.addrs()[0].port();
                let running = server.run();
                let _ = started.send(Ok(port));
                running.await
            });
            if let Err(e) = run {
                let _ = tx.send(Err(e));
            }
        })?;
    Ok(rx.recv()??)
}

fn psql(args: &Args, sql: &str) -> Command {
    let mut cmd = Command::new(&args.psql[0]);
    cmd.args(&args.psql[1..])
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    cmd
}

/// Kills the child on drop (the psql session holding the leader lock).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nearest-rank percentile as the Python script computes it.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = (q * (sorted.len() - 1) as f64).round_ties_even() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Target {
    client: reqwest::Client,
    url: String,
    auth: String,
}

impl Target {
    fn new(url: String, token: &str) -> anyhow::Result<Target> {
        // One keep-alive connection per client and target, like the Python clients.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Target {
            client,
            url,
            auth: format!("Bearer {token}"),
        })
    }

    /// One call; milliseconds from sending to the whole body read.
    async fn call(&self) -> anyhow::Result<f64> {
        let t = Instant::now();
        let resp = self
            .client
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(REQUEST)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            status == reqwest::StatusCode::OK,
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        Ok(ms)
    }
}

/// Latencies (ms) per target of `n / conc` rounds from each of `conc` closed-loop clients;
/// a round calls every target once, starting at target `(i + k) % targets` so each goes
/// first equally often.
async fn measure(
    targets: &[(String, String)],
    n: usize,
    conc: usize,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(conc));
    let mut tasks = Vec::with_capacity(conc);
    for k in 0..conc {
        let mine = targets
            .iter()
            .map(|(url, token)| Target::new(url.clone(), token))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let barrier = barrier.clone();
        tasks.push(tokio::task::spawn_local(async move {
            for _ in 0..20 {
                for t in &mine {
                    t.call().await?;
                }
            }
            let mut out = vec![Vec::with_capacity(n / conc); mine.len()];
            barrier.wait().await;
            for i in 0..n / conc {
                for j in 0..mine.len() {
                    let t = (i + k + j) % mine.len();
                    out[t].push(mine[t].call().await?);
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = vec![Vec::with_capacity(n); targets.len()];
    for t in tasks {
        for (into, from) in all.iter_mut().zip(t.await??) {
            into.extend(from);
        }
    }
    Ok(all)
}

/// nginx's master process, stopped on drop with SIGTERM, which also stops its workers (a
/// SIGKILL would leave them running, holding the port and the script's output pipe).
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// nginx as a plain reverse proxy to the stand-in on a free port; stopped on drop.
fn start_nginx(worker_port: u16) -> anyhow::Result<(Nginx, u16, std::path::PathBuf)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let run = std::env::temp_dir().join(format!("gateway-overhead-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&run)?;
    let dir = run.display();
    let conf = format!(
        "worker_processes 2;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
           upstream standin {{ server 127.0.0.1:{worker_port}; keepalive 64; }}\n\
           server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://standin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
    );
    std::fs::write(run.join("nginx.conf"), conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(run.join("nginx.conf"))
        .arg("-p")
        .arg(&run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting nginx (apt-get install nginx): {e}"))?;
    let child = Nginx(child);
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((child, port, run));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nginx did not listen on {port}; see {dir}/error.log")
}

/// CPU time used so far by process `pid` (all its threads), in nanoseconds
/// (`/proc/{pid}/task/*/schedstat`; 0 when unreadable).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of `pid` and its direct children (nginx's master and workers).
fn tree_cpu_ns(pid: u32) -> u64 {
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`: the ppid is after the last ')'.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .map(cpu_ns)
        .sum();
    cpu_ns(pid) + children
}

/// CPU time of every `postgres` process on the machine (the hub's cluster:
/// its usage inserts and whatever else the gateway's calls cost it).
fn postgres_cpu_ns() -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_ns)
        .sum()
}

fn summary(xs: &mut [f64]) -> serde_json::Value {
    xs.sort_by(f64::total_cmp);
    serde_json::json!({
        "p50": round3(percentile(xs, 0.5)),
        "p90": round3(percentile(xs, 0.9)),
        "p99": round3(percentile(xs, 0.99)),
    })
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let worker_port = start_standin(secret.clone())?;
    let _leader = KillOnDrop(
        Command::new(&args.psql[0])
            .args(&args.psql[1..])
            .args([
                "-q",
                "-c",
                &format!("SELECT pg_advisory_lock({LEADER_LOCK}); SELECT pg_sleep(100000)"),
            ])
            .stdout(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let (wid, replica) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let sql = format!(
        "INSERT INTO workers (id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, last_heartbeat)
           VALUES ('{wid}', 'standin', 'http://127.0.0.1:{worker_port}', '{secret}', 8589934592, 8589934592, 2, now() + interval '1 day');
         WITH e AS (INSERT INTO endpoints (namespace_id, name, repo_type, repository, revision, commit_oid, task,
                      min_replicas, max_replicas, access, status)
                    SELECT id, 'standin', 'model', 'bench/standin', 'main', repeat('0', 40), 'feature-extraction', 1, 1, 'protected', 'running'
                    FROM namespaces WHERE name = 'bench' RETURNING id)
         INSERT INTO replicas (id, endpoint_id, worker_id, status) SELECT '{replica}', id, '{wid}', 'running' FROM e;"
    );
    let status = psql(&args, &sql).stdout(Stdio::null()).status()?;
    anyhow::ensure!(
        status.success(),
        "registering the stand-in failed: {status}"
    );

    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "CPU: {cpu}; {cores} cores; load {}; client: Rust (one tokio thread), stand-in: Rust (one actix thread)",
        load.join(" ")
    );

    let gateway_url = format!(
        "{}/endpoints/bench/standin/v1/embeddings",
        args.hub.trim_end_matches('/')
    );
    let direct_url = format!("http://127.0.0.1:{worker_port}/models/{replica}/v1/embeddings");
    let nginx = if args.nginx {
        Some(start_nginx(worker_port)?)
    } else {
        None
    };
    let mut targets = vec![
        (gateway_url, args.token.clone()),
        (direct_url, secret.clone()),
    ];
    if let Some((_, port, _)) = &nginx {
        targets.push((
            format!("http://127.0.0.1:{port}/models/{replica}/v1/embeddings"),
            secret.clone(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let nginx_pid = nginx.as_ref().map(|(n, _, _)| n.0.id());
    for &conc in &args.concurrency {
        let before = (args.hub_pid.map(cpu_ns), nginx_pid.map(tree_cpu_ns));
        let pg_before = postgres_cpu_ns();
        let mut runs = local.block_on(&rt, measure(&targets, args.requests, conc))?;
        // CPU per call of each proxy (the warm-up calls are in it too).
        let calls = (runs[0].len() + 20) as f64;
        let per_call = |b: Option<u64>, a: Option<u64>| {
            b.zip(a)
                .map(|(b, a)| round3(a.saturating_sub(b) as f64 / calls / 1000.0))
        };
        let hub_cpu_us = per_call(before.0, args.hub_pid.map(cpu_ns));
        let nginx_cpu_us = per_call(before.1, nginx_pid.map(tree_cpu_ns));
        let pg_cpu_us = per_call(Some(pg_before), Some(postgres_cpu_ns()));
        let sums: Vec<serde_json::Value> = runs.iter_mut().map(|r| summary(r)).collect();
        let (gs, ds) = (&sums[0], &sums[1]);
        let added = |over: &serde_json::Value, q: &str| {
            round3(over[q].as_f64().unwrap_or(0.0) - ds[q].as_f64().unwrap_or(0.0))
        };
        let (p50, p90, p99) = (added(gs, "p50"), added(gs, "p90"), added(gs, "p99"));
        println!(
            "* concurrency {conc}, {} requests each way: added p50 **{p50} ms**, p90 {p90} ms, p99 **{p99} ms** (gateway {gs} / direct {ds})",
            runs[0].len()
        );
        let mut line = serde_json::json!({
            "concurrency": conc,
            "requests_each": runs[0].len(),
            "gateway": gs,
            "direct": ds,
            "added_p50_ms": p50,
            "added_p90_ms": p90,
            "added_p99_ms": p99,
            "client": "rust",
        });
        if let Some(us) = hub_cpu_us {
            println!("  * hub CPU per gateway call: **{us} µs**");
            line["hub_cpu_us_per_call"] = us.into();
        }
        if let Some(us) = pg_cpu_us.filter(|us| *us > 0.0) {
            println!(
                "  * PostgreSQL CPU per gateway call: **{us} µs** (usage inserts, background work)"
            );
            line["postgres_cpu_us_per_call"] = us.into();
        }
        if let Some(us) = nginx_cpu_us {
            println!("  * nginx CPU per proxied call: **{us} µs**");
            line["nginx_cpu_us_per_call"] = us.into();
        }
        if let Some(ns) = sums.get(2) {
            let (n50, n90, n99) = (added(ns, "p50"), added(ns, "p90"), added(ns, "p99"));
            println!(
                "  * nginx (plain proxy, same stand-in, same rotation): added p50 **{n50} ms**, p90 {n90} ms, p99 **{n99} ms** (nginx {ns})"
            );
            line["nginx"] = ns.clone();
            line["nginx_added_p50_ms"] = n50.into();
            line["nginx_added_p90_ms"] = n90.into();
            line["nginx_added_p99_ms"] = n99.into();
        }
        eprintln!("{line}");
    }
    if let Some((child, _, run)) = nginx {
        drop(child);
        let _ = std::fs::remove_dir_all(run);
    }
    Ok(())
}
