//! STAND-IN (branch `genapi` only): the minimal surface of the `templates` branch's chat
//! template API, so the HTTP layer compiles before that branch lands. Drop this file at
//! merge and take the `templates` branch's version.

use crate::engine::error::EngineError;
use crate::engine::generate::tools::ToolFormat;

/// A compiled chat template.
pub struct ChatTemplate {
    source: String,
    bos: Option<String>,
    eos: Option<String>,
}

impl ChatTemplate {
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<ChatTemplate, EngineError> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", source)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            source: source.to_string(),
            bos: bos_token.map(str::to_string),
            eos: eos_token.map(str::to_string),
        })
    }

    pub fn render(
        &self,
        messages: &str,
        tools: Option<&str>,
        add_generation_prompt: bool,
        extra: Option<&str>,
    ) -> Result<String, EngineError> {
        let bad = |e: serde_json::Error| EngineError::Template(e.to_string());
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template("chat", &self.source)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        let messages: serde_json::Value = serde_json::from_str(messages).map_err(bad)?;
        let tools: Option<serde_json::Value> = tools.map(serde_json::from_str).transpose().map_err(bad)?;
        let mut ctx = serde_json::Map::new();
        if let Some(extra) = extra {
            if let serde_json::Value::Object(o) = serde_json::from_str(extra).map_err(bad)? {
                ctx.extend(o);
            }
        }
        ctx.insert("messages".into(), messages);
        ctx.insert("tools".into(), tools.unwrap_or(serde_json::Value::Null));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos.clone().unwrap_or_default().into());
        ctx.insert("eos_token".into(), self.eos.clone().unwrap_or_default().into());
        env.get_template("chat")
            .and_then(|t| t.render(minijinja::Value::from_serialize(&ctx)))
            .map_err(|e| EngineError::Template(e.to_string()))
    }

    pub fn tool_format(&self) -> ToolFormat {
        if self.source.contains("<tool_call>") {
            ToolFormat::Hermes
        } else {
            ToolFormat::None
        }
    }
}
