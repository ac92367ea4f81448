//! Chat templates render in helper processes (`engine::generate::sandbox`): a template
//! that builds a value nested hundreds of thousands of levels deep overflows the stack
//! of the process rendering it, and that process must not be the worker. Here the
//! `hub-worker` binary is the helper; the template crashes it, the request is refused
//! with the reason, this process lives on, and the next render (the same model, another
//! model) works.

use crate::common::*;
use actix_web::http::StatusCode;
use actix_web::test as web_test;
use actix_web::App;
use hub_worker::engine::generate::sandbox;
use hub_worker::engine::generate::template::ChatTemplate;
use hub_worker::engine::{EngineConfig, EngineError, Task};
use hub_worker::http::{self, GatewayAuth, HttpState};
use hub_worker::registry::ModelRegistry;
use serde_json::{json, Value};
use std::sync::Arc;

/// Every chat template of this test binary renders in a `hub-worker` helper from here
/// on (a test harness cannot serve the helper argument itself).
pub(crate) fn use_the_sandbox() {
    sandbox::use_sandbox_exe(env!("CARGO_BIN_EXE_hub-worker"));
}

/// Wraps a namespace value in a list 300,000 times (well inside the fuel): dropping the
/// result recurses 300,000 levels, tens of megabytes of stack.
pub(crate) const DEEP: &str = "{% set ns = namespace(x=[]) %}{% for k in range(3) %}\
                    {% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}\
                    {% endfor %}{{ ns.x | length }}";

const HELLO: &str = r#"[{"role": "user", "content": "Hi"}]"#;

fn gemma_template() -> ChatTemplate {
    let source =
        std::fs::read_to_string(repo_root().join("fixtures/generation/gemma3-chat_template.jinja"))
            .unwrap();
    ChatTemplate::new(&source, Some("<bos>"), Some("<eos>")).unwrap()
}

fn crashed(result: Result<String, EngineError>) -> String {
    match result {
        Err(EngineError::Template(m)) if m.contains("crashed its renderer") => m,
        other => panic!("expected a crashed renderer, got {other:?}"),
    }
}

#[test]
fn a_deep_value_crashes_the_helper_not_this_process() {
    use_the_sandbox();
    let deep = ChatTemplate::new(DEEP, None, None).unwrap();
    let message = crashed(deep.render(HELLO, None, true, None));
    assert!(message.contains("SIGABRT"), "{message}");

    // Renders go on, in a new helper, byte for byte as in this process.
    let gemma = gemma_template();
    let rendered = gemma.render(HELLO, None, true, None).unwrap();
    assert_eq!(
        rendered,
        gemma.render_here(HELLO, None, true, None).unwrap()
    );
    assert_eq!(
        rendered,
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    // A template's own error comes back as its message, and the helper stays in use.
    let raising = ChatTemplate::new("{{ raise_exception('no system role') }}", None, None).unwrap();
    assert_eq!(
        raising.render(HELLO, None, true, None),
        raising.render_here(HELLO, None, true, None)
    );
    // The same hostile template again: refused again.
    crashed(deep.render(HELLO, None, true, None));
    assert!(gemma.render(HELLO, None, true, None).is_ok());
}

#[test]
fn concurrent_renders_each_get_a_helper() {
    use_the_sandbox();
    let gemma = Arc::new(gemma_template());
    let want = gemma.render_here(HELLO, None, true, None).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let gemma = gemma.clone();
            std::thread::spawn(move || {
                if i % 3 == 0 {
                    let deep = ChatTemplate::new(DEEP, None, None).unwrap();
                    crashed(deep.render(HELLO, None, true, None));
                    None
                } else {
                    Some(gemma.render(HELLO, None, true, None).unwrap())
                }
            })
        })
        .collect();
    for t in threads {
        if let Some(got) = t.join().unwrap() {
            assert_eq!(got, want);
        }
    }
}

/// A helper that died idle (the OOM killer, an operator) is not the next template's
/// fault: the render goes to a new helper.
#[test]
fn a_helper_killed_while_idle_is_replaced() {
    use_the_sandbox();
    let gemma = gemma_template();
    let want = gemma.render_here(HELLO, None, true, None).unwrap();
    assert_eq!(gemma.render(HELLO, None, true, None).unwrap(), want);
    let mut killed = 0;
    for _ in 0..3 {
        killed += sandbox::kill_idle_helpers();
        assert_eq!(gemma.render(HELLO, None, true, None).unwrap(), want);
    }
    assert!(killed > 0, "no idle helper to kill");
}

/// Over HTTP: a decoder whose repo carries the hostile template. The chat request is a
/// 400 `chat_template_error` with the reason; the worker serves the next request.
#[actix_web::test]
async fn a_hostile_chat_template_is_a_400_and_the_worker_lives_on() {
    use_the_sandbox();
    let dir = scratch().join("hostile-template-decoder");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = repo_root().join("hub-worker/tests/fixtures/decoders/qwen3");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join("chat_template.jinja"), DEEP).unwrap();
    let model = load(&dir, Some(Task::TextGeneration), EngineConfig::default()).await;
    let registry = Arc::new(ModelRegistry::new());
    registry.insert_model("hostile", "tenant/hostile", model);
    let state = HttpState {
        registry,
        auth: Arc::new(GatewayAuth::open()),
        metrics: Default::default(),
    };
    let app =
        web_test::init_service(App::new().configure(move |c| http::configure(c, state.clone())))
            .await;
    let call = |uri: &'static str, body: Value| {
        web_test::TestRequest::post()
            .uri(uri)
            .set_json(body)
            .to_request()
    };
    let chat = json!({"model": "hostile", "messages": [{"role": "user", "content": "Hi"}],
                      "max_tokens": 2});
    for _ in 0..2 {
        let resp = web_test::call_service(
            &app,
            call("/models/hostile/v1/chat/completions", chat.clone()),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = web_test::read_body_json(resp).await;
        let text = body.to_string();
        assert!(
            text.contains("chat_template_error") && text.contains("crashed its renderer"),
            "{text}"
        );
    }
    let completion = json!({"model": "hostile", "prompt": "Hello", "max_tokens": 2});
    let resp =
        web_test::call_service(&app, call("/models/hostile/v1/completions", completion)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
