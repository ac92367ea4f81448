//! Builds the fixture text classifier (MiniLM + deterministic 3-label head) from the MiniLM
//! fixture: `make-classifier MINILM_DIR OUT_DIR`. Prints the weights digest, which must
//! equal `weights_digest` in fixtures/worker/classifier-reference.json.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(minilm), Some(out)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: make-classifier MINILM_DIR OUT_DIR");
    };
    let digest = hub_worker::fixtures::make_classifier(minilm.as_ref(), out.as_ref())?;
    println!("{digest}");
    Ok(())
}
