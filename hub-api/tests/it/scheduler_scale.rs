//! The scheduler at fleet scale (issue 14): the real `scheduler::tick` against a
//! real PostgreSQL, over a fleet seeded in bulk by SQL (workers of 8/16/32/64 GiB,
//! some partly used; model repos whose commits hold real-sized weight files and,
//! for decoders, a real `config.json` in the object store, so `memory_need` gives
//! what it gives in production; endpoints with min_replicas 0/1/2, some paused,
//! some idle long enough to scale to zero).
//!
//! `fleet_correctness` runs 50 workers x 500 endpoints in the normal test run and
//! checks what a tick must do; `fleet_bench` (ignored; `scripts/bench/scheduler.sh`)
//! runs 1,000 x 10,000 (or `SCHED_WORKERS` x `SCHED_ENDPOINTS`) and prints the
//! times, statements and placement quality.

use hub_testkit::TestState;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const GIB: i64 = 1 << 30;

/// A deterministic generator (SplitMix64): the same fleet on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Picks an index by weight.
    fn pick(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

fn hex(rng: &mut Rng, chars: usize) -> String {
    let mut s = String::new();
    while s.len() < chars {
        s.push_str(&format!("{:016x}", rng.next()));
    }
    s.truncate(chars);
    s
}

/// A kind of model: its weight file bytes and, for a decoder, its config.
struct Kind {
    weights: i64,
    /// (layers, heads, kv heads, hidden) of a bf16 decoder; None for an encoder.
    decoder: Option<(u64, u64, u64, u64)>,
    share: f64,
}

/// The model mix: mostly embedders and classifiers, decoders of 0.5B to 7B
/// (Qwen2.5 shapes, bf16 safetensors, so twice their files once loaded).
const KINDS: &[Kind] = &[
    // all-MiniLM-L6-v2
    Kind {
        weights: 90_868_376,
        decoder: None,
        share: 0.40,
    },
    // bge-base
    Kind {
        weights: 437_955_512,
        decoder: None,
        share: 0.25,
    },
    // bge-large
    Kind {
        weights: 1_340_616_616,
        decoder: None,
        share: 0.10,
    },
    // 0.5B
    Kind {
        weights: 988_097_824,
        decoder: Some((24, 14, 2, 896)),
        share: 0.12,
    },
    // 1.5B
    Kind {
        weights: 3_087_467_144,
        decoder: Some((28, 12, 2, 1536)),
        share: 0.08,
    },
    // 3B
    Kind {
        weights: 6_171_877_536,
        decoder: Some((36, 16, 2, 2048)),
        share: 0.04,
    },
    // 7B
    Kind {
        weights: 15_231_233_024,
        decoder: Some((28, 28, 4, 3584)),
        share: 0.01,
    },
];

#[derive(Clone, Copy)]
struct Fleet {
    workers: usize,
    endpoints: usize,
    /// Distinct models (repos with one commit each) the endpoints deploy.
    models: usize,
    /// Worker memory is 8/16/32/64 GiB times this (0.5: demand exceeds capacity).
    memory_scale: f64,
    seed: u64,
}

struct Seeded {
    /// Memory need of each endpoint (by `scheduler::memory_need`).
    need: HashMap<i64, i64>,
    workers: Vec<Uuid>,
}

async fn seed(t: &TestState, f: Fleet) -> Seeded {
    let db = &t.state.db;
    let mut rng = Rng(f.seed);
    // Namespaces: 100 orgs.
    let orgs: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO namespaces (name, kind, fullname) SELECT 'org' || g, 'org', '' FROM generate_series(1, 100) g RETURNING id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let orgs: Vec<i64> = orgs.into_iter().map(|r| r.0).collect();

    // Models: a repo, a commit, a tree with config.json and the weight files.
    let (mut r_ns, mut r_name) = (vec![], vec![]);
    let mut kinds = vec![];
    for m in 0..f.models {
        r_ns.push(orgs[m % orgs.len()]);
        r_name.push(format!("model-{m}"));
        kinds.push(rng.pick(&KINDS.iter().map(|k| k.share).collect::<Vec<_>>()));
    }
    let repo_ids: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO repos (namespace_id, name, repo_type) SELECT * FROM unnest($1::bigint[], $2::text[]) AS u(ns, name), LATERAL (SELECT 'model') t RETURNING id",
    )
    .bind(&r_ns)
    .bind(&r_name)
    .fetch_all(db)
    .await
    .unwrap();
    let (mut b_oid, mut b_lfs, mut b_sha, mut b_size) = (vec![], vec![], vec![], vec![]);
    let (mut e_tree, mut e_name, mut e_oid) = (vec![], vec![], vec![]);
    let (mut c_repo, mut c_oid, mut c_tree) = (vec![], vec![], vec![]);
    // (repo id, commit, task) of each model.
    let mut models = vec![];
    let mut config_blobs: HashMap<usize, String> = HashMap::new();
    for (m, (repo,)) in repo_ids.iter().enumerate() {
        let kind = &KINDS[kinds[m]];
        let tree = hex(&mut rng, 40);
        let commit = hex(&mut rng, 40);
        // config.json: real bytes in the object store for a decoder (memory_need
        // reads its shape; one blob per decoder kind), a blob row for an encoder.
        let cfg_oid = match kind.decoder {
            Some((layers, heads, kv, hidden)) => match config_blobs.get(&kinds[m]) {
                Some(oid) => oid.clone(),
                None => {
                    let body = serde_json::json!({
                        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                        "num_hidden_layers": layers, "num_attention_heads": heads,
                        "num_key_value_heads": kv, "hidden_size": hidden,
                        "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
                    })
                    .to_string();
                    let size = body.len() as i64;
                    let w = t
                        .state
                        .storage
                        .write_bytes(bytes::Bytes::from(body))
                        .await
                        .unwrap();
                    let oid = hex(&mut rng, 40);
                    b_oid.push(oid.clone());
                    b_lfs.push(false);
                    b_sha.push(w.sha256.to_string());
                    b_size.push(size);
                    config_blobs.insert(kinds[m], oid.clone());
                    oid
                }
            },
            None => {
                let oid = hex(&mut rng, 40);
                b_oid.push(oid.clone());
                b_lfs.push(false);
                b_sha.push(hex(&mut rng, 64));
                b_size.push(700);
                oid
            }
        };
        e_tree.push(tree.clone());
        e_name.push("config.json".to_string());
        e_oid.push(cfg_oid);
        // Weights, in shards of at most 5 GB (as transformers saves them).
        let shards = (kind.weights + 4_999_999_999) / 5_000_000_000;
        for s in 0..shards {
            let oid = hex(&mut rng, 40);
            let sha = hex(&mut rng, 64);
            if kind.decoder.is_some() {
                // The parameter counts commit validation records: bf16, 2 bytes each.
                let elements = kind.weights / shards / 2;
                hub_api::db::git::insert_safetensors_meta(
                    &t.state.db,
                    &sha,
                    &serde_json::json!({"BF16": elements}),
                    elements,
                )
                .await
                .unwrap();
            }
            b_oid.push(oid.clone());
            b_lfs.push(true);
            b_sha.push(sha);
            b_size.push(kind.weights / shards);
            e_tree.push(tree.clone());
            e_name.push(if shards == 1 {
                "model.safetensors".into()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", s + 1)
            });
            e_oid.push(oid);
        }
        c_repo.push(*repo);
        c_oid.push(commit.clone());
        c_tree.push(tree);
        let task = if kind.decoder.is_some() {
            "text-generation"
        } else {
            "feature-extraction"
        };
        models.push((*repo, commit, task, r_ns[m], r_name[m].clone()));
    }
    sqlx::query(
        "INSERT INTO git_blobs (oid, is_lfs, sha256, size, pointer_size)
         SELECT o, l, s, z, CASE WHEN l THEN 134 END FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[]) AS u(o, l, s, z)",
    )
    .bind(&b_oid)
    .bind(&b_lfs)
    .bind(&b_sha)
    .bind(&b_size)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO git_tree_entries (tree_oid, name, mode, oid)
         SELECT t, n, '100644', o FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, n, o)",
    )
    .bind(&e_tree)
    .bind(&e_name)
    .bind(&e_oid)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO commits (repo_id, oid, tree_oid, parent_oids, author_name, author_email, author_time, author_tz, title, message, depth)
         SELECT r, o, t, '{}', 'sim', 'sim@example.com', 1733270400, '+0000', 'weights', '', 1
         FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(r, o, t)",
    )
    .bind(&c_repo)
    .bind(&c_oid)
    .bind(&c_tree)
    .execute(db)
    .await
    .unwrap();

    // Endpoints: popular models deployed many times (a Zipf-like pick), min
    // replicas 0 (40%), 1 (45%) or 2 (15%); 5% paused; half of the min-0 ones
    // idle for hours (they scale to zero).
    let (mut e_ns, mut ep_name, mut e_repo) = (vec![], vec![], vec![]);
    let (mut e_repository, mut e_commit, mut e_task) = (vec![], vec![], vec![]);
    let (mut mins, mut maxs, mut stz, mut paused, mut idle) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..f.endpoints {
        // Zipf-ish: the first models are the popular ones.
        let m = ((rng.unit().powf(2.0)) * f.models as f64) as usize % f.models;
        let (repo, commit, task, ns, name) = &models[m];
        e_ns.push(orgs[i % orgs.len()]);
        ep_name.push(format!("ep-{i}"));
        e_repo.push(*repo);
        e_repository.push(format!("org{ns}/{name}"));
        e_commit.push(commit.clone());
        e_task.push(task.to_string());
        let min = [0, 1, 2][rng.pick(&[0.40, 0.45, 0.15])];
        mins.push(min);
        maxs.push(min.max(1) + 1);
        stz.push(if min == 0 { Some(3600) } else { None::<i32> });
        paused.push(rng.unit() < 0.05);
        idle.push(min == 0 && rng.unit() < 0.5);
    }
    sqlx::query(
        "INSERT INTO endpoints (namespace_id, name, repo_id, repo_type, repository, revision, commit_oid, task,
            min_replicas, max_replicas, scale_to_zero_after_s, access, paused, target_replicas, precision,
            created_at, last_request_at)
         SELECT ns, n, r, 'model', repo, 'main', c, task, mn, mx, s, 'protected', p, GREATEST(mn, 1), 'f32',
            now() - interval '1 day', CASE WHEN i THEN now() - interval '3 hours' ELSE now() - interval '1 minute' END
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[], $9::int[], $10::bool[], $11::bool[])
           AS u(ns, n, r, repo, c, task, mn, mx, s, p, i)",
    )
    .bind(&e_ns)
    .bind(&ep_name)
    .bind(&e_repo)
    .bind(&e_repository)
    .bind(&e_commit)
    .bind(&e_task)
    .bind(&mins)
    .bind(&maxs)
    .bind(&stz)
    .bind(&paused)
    .bind(&idle)
    .execute(db)
    .await
    .unwrap();

    // Workers: 8/16/32/64 GiB (15/35/30/20%), 1 GiB taken by the system, a
    // fifth of them with 10-50% more in use by something else.
    let (mut w_id, mut w_name, mut w_mem, mut w_free, mut w_age) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..f.workers {
        let gib = [8, 16, 32, 64][rng.pick(&[0.15, 0.35, 0.30, 0.20])];
        let mem = (gib as f64 * f.memory_scale * GIB as f64) as i64;
        let used = if rng.unit() < 0.2 {
            (mem as f64 * (0.1 + 0.4 * rng.unit())) as i64
        } else {
            0
        };
        w_id.push(Uuid::from_u64_pair(f.seed, i as u64 + 1));
        w_name.push(format!("worker-{i}"));
        w_mem.push(mem);
        w_free.push((mem - GIB - used).max(0));
        w_age.push((f.workers - i) as i32);
    }
    sqlx::query(
        "INSERT INTO workers (id, name, url, gateway_secret, memory_bytes, free_memory_bytes, cores, registered_at)
         SELECT id, n, 'http://' || n || ':8090', 's', m, fr, 16, now() - make_interval(secs => a)
         FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::int[]) AS u(id, n, m, fr, a)",
    )
    .bind(&w_id)
    .bind(&w_name)
    .bind(&w_mem)
    .bind(&w_free)
    .bind(&w_age)
    .execute(db)
    .await
    .unwrap();

    // What each model needs, by the scheduler's own estimate.
    let mut by_model: HashMap<(i64, String), i64> = HashMap::new();
    let rows = hub_api::db::endpoints::all(db).await.unwrap();
    let mut need = HashMap::new();
    for e in &rows {
        let key = (e.repo_id.unwrap(), e.commit_oid.clone());
        let n = match by_model.get(&key) {
            Some(n) => *n,
            None => {
                let n = hub_api::scheduler::memory_need(&t.state, e).await.unwrap();
                assert!(n > 0, "{}: no need", e.repository);
                by_model.insert(key, n);
                n
            }
        };
        need.insert(e.id, n);
    }
    sqlx::query("ANALYZE").execute(db).await.unwrap();
    Seeded {
        need,
        workers: w_id,
    }
}

/// Counts the statements the app sends (sqlx logs each one at TRACE under
/// `sqlx::query`): one round trip each.
#[derive(Clone, Default)]
struct Statements(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Statements {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Heartbeats from every worker not `lost`.
async fn heartbeat(t: &TestState) {
    sqlx::query("UPDATE workers SET last_heartbeat = now() WHERE last_heartbeat > now() - interval '30 seconds'")
        .execute(&t.state.db)
        .await
        .unwrap();
}

/// The workers load what they were assigned: replicas run, and each worker's
/// free memory drops by what it took.
async fn load(t: &TestState, s: &Seeded) {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT worker_id, endpoint_id FROM replicas WHERE status = 'assigned'")
            .fetch_all(&t.state.db)
            .await
            .unwrap();
    let mut taken: HashMap<Uuid, i64> = HashMap::new();
    for (w, e) in rows {
        *taken.entry(w).or_default() += s.need[&e];
    }
    let (ws, ts): (Vec<Uuid>, Vec<i64>) = taken.into_iter().unzip();
    sqlx::query(
        "UPDATE workers w SET free_memory_bytes = w.free_memory_bytes - u.t FROM unnest($1::uuid[], $2::bigint[]) AS u(id, t) WHERE w.id = u.id",
    )
    .bind(&ws)
    .bind(&ts)
    .execute(&t.state.db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE replicas SET status = 'running', updated_at = now() WHERE status = 'assigned'",
    )
    .execute(&t.state.db)
    .await
    .unwrap();
}

/// What the replicas look like now.
#[derive(Debug, Clone, PartialEq)]
struct Placement {
    /// Replicas.
    replicas: usize,
    /// Endpoints with at least one replica.
    served: usize,
    /// Memory of the replicas.
    memory: i64,
    /// Most replicas on one worker, and the mean over the workers.
    max_per_worker: usize,
    mean_per_worker: f64,
}

/// Checks the invariants (no two replicas of an endpoint on one worker, no
/// worker promised more than it has free) and measures the placement.
async fn placement(t: &TestState, s: &Seeded) -> Placement {
    let rows: Vec<(i64, Uuid, String)> =
        sqlx::query_as("SELECT endpoint_id, worker_id, status FROM replicas")
            .fetch_all(&t.state.db)
            .await
            .unwrap();
    let free: HashMap<Uuid, i64> =
        sqlx::query_as::<_, (Uuid, i64)>("SELECT id, free_memory_bytes FROM workers")
            .fetch_all(&t.state.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut pairs = HashSet::new();
    let mut promised: HashMap<Uuid, i64> = HashMap::new();
    let mut per_worker: HashMap<Uuid, usize> = HashMap::new();
    let mut served = HashSet::new();
    let mut memory = 0;
    for (e, w, status) in &rows {
        assert!(
            pairs.insert((*e, *w)),
            "two replicas of endpoint {e} on worker {w}"
        );
        if status == "assigned" {
            *promised.entry(*w).or_default() += s.need[e];
        }
        *per_worker.entry(*w).or_default() += 1;
        served.insert(*e);
        memory += s.need[e];
    }
    for (w, p) in &promised {
        assert!(
            *p <= free[w],
            "worker {w} promised {p} bytes with {} free",
            free[w]
        );
    }
    Placement {
        replicas: rows.len(),
        served: served.len(),
        memory,
        max_per_worker: per_worker.values().copied().max().unwrap_or(0),
        mean_per_worker: rows.len() as f64 / free.len().max(1) as f64,
    }
}

/// Upper bounds for a first placement on an empty fleet (call it after the
/// first tick, before the workers load): the replicas wanted (each endpoint's
/// target), and the most replicas / memory / endpoints any
/// placement could reach given only the sum of free memory (a fractional
/// bin-packing bound: smallest needs first until the free memory is used up,
/// counting only needs that fit on some worker).
struct Bounds {
    wanted: usize,
    wanted_endpoints: usize,
    replicas: usize,
    memory: i64,
    served: usize,
}

async fn bounds(t: &TestState, s: &Seeded) -> Bounds {
    let rows: Vec<(i64, i32)> = sqlx::query_as("SELECT id, target_replicas FROM endpoints")
        .fetch_all(&t.state.db)
        .await
        .unwrap();
    let (free, biggest): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(free_memory_bytes), 0)::bigint, COALESCE(max(free_memory_bytes), 0) FROM workers",
    )
    .fetch_one(&t.state.db)
    .await
    .unwrap();
    let mut items: Vec<i64> = vec![];
    let mut firsts: Vec<i64> = vec![];
    for (e, target) in &rows {
        for i in 0..*target {
            items.push(s.need[e]);
            if i == 0 {
                firsts.push(s.need[e]);
            }
        }
    }
    let fill = |mut v: Vec<i64>| {
        v.retain(|n| *n <= biggest);
        v.sort();
        let (mut used, mut n) = (0i64, 0usize);
        for x in v {
            if used + x > free {
                break;
            }
            used += x;
            n += 1;
        }
        (n, used)
    };
    let total: i64 = items.iter().filter(|n| **n <= biggest).sum();
    Bounds {
        wanted: items.len(),
        wanted_endpoints: firsts.len(),
        replicas: fill(items).0,
        memory: total.min(free),
        served: fill(firsts).0,
    }
}

async fn statuses(t: &TestState) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM endpoints GROUP BY 1")
        .fetch_all(&t.state.db)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// What changes a tick made: replica rows, assignment versions, endpoint events.
async fn fingerprint(t: &TestState) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM replicas), (SELECT COALESCE(sum(assign_version), 0)::bigint FROM workers), (SELECT count(*) FROM endpoint_events)",
    )
    .fetch_one(&t.state.db)
    .await
    .unwrap()
}

struct Row {
    what: &'static str,
    ms: f64,
    statements: u64,
    note: String,
}

async fn timed_tick(t: &TestState, count: &Statements, what: &'static str, rows: &mut Vec<Row>) {
    heartbeat(t).await;
    // Callsites first hit on another test's thread may have cached "no one
    // listens" while this thread's counter was being set up: look again.
    tracing::callsite::rebuild_interest_cache();
    let before = count.get();
    let started = Instant::now();
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // The heartbeat query above is the simulation's, not the tick's.
    rows.push(Row {
        what,
        ms,
        statements: count.get() - before,
        note: String::new(),
    });
}

struct Outcome {
    rows: Vec<Row>,
    first: Placement,
    bounds: Bounds,
    lost: Placement,
}

/// First tick (everything pending), the workers load, a settling tick (statuses
/// to running), steady ticks, 5% of the workers lost, the tick that replaces
/// their replicas, and steady again.
async fn scenario(f: Fleet, steady_rounds: usize) -> Outcome {
    let t = TestState::new().await;
    let seeded = seed(&t, f).await;
    let count = Statements::default();
    let rows = run(&t, &seeded, &count, steady_rounds);
    let _guard = tracing::subscriber::set_default({
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        tracing_subscriber::registry().with(
            count.clone().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("sqlx::query", tracing::Level::TRACE),
            ),
        )
    });
    rows.await
}

async fn run(t: &TestState, s: &Seeded, count: &Statements, steady_rounds: usize) -> Outcome {
    let mut rows = vec![];
    timed_tick(t, count, "first tick (all pending)", &mut rows).await;
    // The targets are the tick's; the free memory is as before it (nothing loaded yet).
    let bounds = bounds(t, s).await;
    let first = placement(t, s).await;
    rows.last_mut().unwrap().note = format!("{} replicas placed", first.replicas);
    load(t, s).await;
    timed_tick(t, count, "settle (statuses to running)", &mut rows).await;
    let settled = fingerprint(t).await;
    let mut steady = vec![];
    for _ in 0..steady_rounds {
        timed_tick(t, count, "steady", &mut steady).await;
    }
    assert_eq!(
        fingerprint(t).await,
        settled,
        "a steady tick changed something"
    );
    steady.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let mut median = steady.swap_remove(steady.len() / 2);
    median.what = "steady (median)";
    median.note = format!("of {steady_rounds}");
    rows.push(median);
    // 5% of the workers go silent.
    let lost: Vec<Uuid> = s.workers.iter().step_by(20).copied().collect();
    let on_lost: (i64,) = sqlx::query_as("SELECT count(*) FROM replicas WHERE worker_id = ANY($1)")
        .bind(&lost)
        .fetch_one(&t.state.db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE workers SET last_heartbeat = now() - interval '1 minute' WHERE id = ANY($1)",
    )
    .bind(&lost)
    .execute(&t.state.db)
    .await
    .unwrap();
    timed_tick(t, count, "5% of workers lost", &mut rows).await;
    let after = placement(t, s).await;
    rows.last_mut().unwrap().note = format!(
        "{} workers, {} replicas lost; {} replicas after",
        lost.len(),
        on_lost.0,
        after.replicas
    );
    load(t, s).await;
    timed_tick(t, count, "settle", &mut rows).await;
    Outcome {
        rows,
        first,
        bounds,
        lost: after,
    }
}

fn report(f: &Fleet, o: &Outcome) -> String {
    let mut out = format!(
        "\n{} workers x {} endpoints ({} models), worker memory x{}\n\n| tick | ms | statements | note |\n|---|---:|---:|---|\n",
        f.workers, f.endpoints, f.models, f.memory_scale
    );
    for r in &o.rows {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} |\n",
            r.what, r.ms, r.statements, r.note
        ));
    }
    let (p, b) = (&o.first, &o.bounds);
    let pct = |a: f64, b: f64| if b > 0.0 { 100.0 * a / b } else { 100.0 };
    out.push_str(&format!(
        "\nfirst placement: {} of {} replicas wanted ({:.1}% of the bound {}), {} of {} endpoints served ({:.1}% of the bound {}), {:.0} of {:.0} GiB ({:.1}% of the bound), max/mean replicas per worker {} / {:.2} ({:.2}); after losing 5%: {} replicas, {} endpoints served\n",
        p.replicas,
        b.wanted,
        pct(p.replicas as f64, b.replicas as f64),
        b.replicas,
        p.served,
        b.wanted_endpoints,
        pct(p.served as f64, b.served as f64),
        b.served,
        p.memory as f64 / GIB as f64,
        b.memory as f64 / GIB as f64,
        pct(p.memory as f64, b.memory as f64),
        p.max_per_worker,
        p.mean_per_worker,
        p.max_per_worker as f64 / p.mean_per_worker.max(1e-9),
        o.lost.replicas,
        o.lost.served,
    ));
    out
}

/// 50 workers x 500 endpoints: a tick places every replica it can without
/// breaking an invariant, shows each endpoint's status, changes nothing when
/// nothing changed, and moves the replicas of lost workers.
#[tokio::test]
async fn fleet_correctness() {
    let f = Fleet {
        workers: 50,
        endpoints: 500,
        models: 100,
        memory_scale: 1.0,
        seed: 14,
    };
    let o = scenario(f, 2).await;
    eprintln!("{}", report(&f, &o));
    // Roomy: every replica wanted is placed, or the bound says it could not be.
    assert_eq!(o.first.replicas, o.bounds.replicas.min(o.bounds.wanted));
    assert!(o.first.replicas > 400, "{:?}", o.first);
    // Lost workers' replicas are placed elsewhere.
    assert_eq!(o.lost.replicas, o.first.replicas, "{:?}", o.lost);
    // A steady tick is cheap: no per-endpoint statements (and the counter counts).
    assert!(
        o.rows[0].statements >= 4,
        "first tick: {} statements",
        o.rows[0].statements
    );
    let steady = o.rows.iter().find(|r| r.what == "steady (median)").unwrap();
    assert!(
        steady.statements < 50,
        "steady tick: {} statements",
        steady.statements
    );
}

/// Demand beyond capacity: what cannot be placed stays pending with the reason.
#[tokio::test]
async fn fleet_correctness_tight() {
    let f = Fleet {
        workers: 50,
        endpoints: 500,
        models: 100,
        memory_scale: 0.3,
        seed: 15,
    };
    let t = TestState::new().await;
    let s = seed(&t, f).await;
    heartbeat(&t).await;
    hub_api::scheduler::tick(&t.state).await.unwrap();
    let b = bounds(&t, &s).await;
    let p = placement(&t, &s).await;
    assert!(p.replicas < b.wanted, "not tight: {p:?}");
    // Each deployed commit's need is worked out once and kept.
    let kept = t.state.scheduler.needs_cached();
    assert!(kept > 0 && kept <= f.models, "{kept} needs kept");
    let st = statuses(&t).await;
    let pending: Vec<(String,)> = sqlx::query_as(
        "SELECT message FROM endpoints e WHERE status = 'pending' AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.endpoint_id = e.id)",
    )
    .fetch_all(&t.state.db)
    .await
    .unwrap();
    assert!(!pending.is_empty(), "{st:?}");
    for (m,) in pending {
        assert!(
            m.starts_with("no worker has ") && m.ends_with(" MiB free right now"),
            "{m}"
        );
    }
    // The next ticks, before the workers loaded anything (their free memory
    // does not show what they were given yet), promise no more than that: no
    // new replica, nothing written.
    let before = fingerprint(&t).await;
    for _ in 0..2 {
        heartbeat(&t).await;
        hub_api::scheduler::tick(&t.state).await.unwrap();
        assert_eq!(placement(&t, &s).await, p);
    }
    assert_eq!(fingerprint(&t).await, before);
    // Once loaded, the free memory is what is left; the pending stay pending.
    load(&t, &s).await;
    for _ in 0..2 {
        heartbeat(&t).await;
        hub_api::scheduler::tick(&t.state).await.unwrap();
    }
    let after = placement(&t, &s).await;
    assert!(
        after.replicas >= p.replicas && after.replicas <= b.replicas,
        "{after:?}"
    );
}

/// The benchmark: `scripts/bench/scheduler.sh`.
#[tokio::test]
#[ignore]
async fn fleet_bench() {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let workers = env("SCHED_WORKERS", 1000.0) as usize;
    let endpoints = env("SCHED_ENDPOINTS", 10000.0) as usize;
    let models = env("SCHED_MODELS", (endpoints / 5).max(1) as f64) as usize;
    let rounds = env("SCHED_STEADY_ROUNDS", 5.0) as usize;
    let mut out = String::new();
    let scales: Vec<f64> = std::env::var("SCHED_SCALES")
        .unwrap_or_else(|_| "1,0.5".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for scale in scales {
        let f = Fleet {
            workers,
            endpoints,
            models,
            memory_scale: scale,
            seed: 14,
        };
        let o = scenario(f, rounds).await;
        let r = report(&f, &o);
        eprintln!("{r}");
        out.push_str(&r);
    }
    println!("{out}");
}
