//! Writes the ONNX graph the worker derives from a model directory's safetensors
//! (`engine::onnx_export`), the graph the OpenVINO and ONNX Runtime engines run, so that
//! it can be studied outside the worker (`scripts/worker/int8-probe.py`).
//!
//! ```text
//! cargo run -p hub-worker --example export-graph -- MODEL_DIR OUT.onnx [feature-extraction|text-classification]
//! ```

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(out)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: export-graph MODEL_DIR OUT.onnx [TASK]");
    };
    let task = match args.get(3) {
        Some(t) => hub_worker::engine::Task::parse(t).map_err(anyhow::Error::msg)?,
        None => hub_worker::engine::Task::FeatureExtraction,
    };
    let spec = hub_worker::engine::spec::inspect(std::path::Path::new(dir))?;
    let graph = hub_worker::engine::onnx_export::export(&spec, task)?;
    std::fs::write(out, &graph)?;
    eprintln!("export-graph: {} bytes to {out}", graph.len());
    Ok(())
}
