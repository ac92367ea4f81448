//! What rendering chat templates in a helper process (`engine::generate::sandbox`)
//! costs: the same renders in this process (`render_here`) and through a helper
//! (`render`), one after the other, then from several threads at once.
//!
//! ```text
//! cargo run --release -p hub-worker --example bench-template -- [RENDERS] [MESSAGES]
//! ```
//!
//! The template is the Gemma 3 one in `fixtures/generation/`; the conversation has
//! MESSAGES turns (default 10). Prints one JSON line of microseconds per render.

use hub_worker::engine::generate::template::ChatTemplate;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // This executable is its own helper, as `hub-worker` is.
    hub_worker::serve_child_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let renders: usize = args.get(1).map_or(Ok(2000), |a| a.parse())?;
    let turns: usize = args.get(2).map_or(Ok(10), |a| a.parse())?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source =
        std::fs::read_to_string(root.join("fixtures/generation/gemma3-chat_template.jinja"))?;
    let template = Arc::new(ChatTemplate::new(&source, Some("<bos>"), Some("<eos>"))?);
    let messages: Vec<_> = (0..turns)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("Turn {i}: a sentence of some length.")})
        })
        .collect();
    let messages = Arc::new(serde_json::to_string(&messages)?);
    // The first render through a helper spawns it and compiles the template there.
    let start = Instant::now();
    let first = template.render(&messages, None, true, None)?;
    let first_us = start.elapsed().as_secs_f64() * 1e6;
    assert_eq!(first, template.render_here(&messages, None, true, None)?);

    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..renders {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / renders as f64
    };
    let here = time(&|| {
        template.render_here(&messages, None, true, None).unwrap();
    });
    let helper = time(&|| {
        template.render(&messages, None, true, None).unwrap();
    });
    let threads = hub_worker::host::cores().max(2);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (t, m) = (template.clone(), messages.clone());
            std::thread::spawn(move || {
                for _ in 0..renders {
                    t.render(&m, None, true, None).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let concurrent = start.elapsed().as_secs_f64() * 1e6 / (renders * threads) as f64;
    println!(
        "{}",
        json!({
            "renders": renders, "messages": turns, "prompt_bytes":
                template.render_here(&messages, None, true, None)?.len(),
            "first_render_with_spawn_us": first_us.round(),
            "in_process_us": (here * 10.0).round() / 10.0,
            "helper_us": (helper * 10.0).round() / 10.0,
            "helper_concurrent_us_per_render": (concurrent * 10.0).round() / 10.0,
            "threads": threads,
        })
    );
    Ok(())
}
