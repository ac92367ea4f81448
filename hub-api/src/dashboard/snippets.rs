//! Copyable client snippets with the hub's real public URL filled in: "use
//! this model" on repo pages, and client code on endpoint pages.

/// One snippet tab.
pub struct Snippet {
    pub id: &'static str,
    pub title: &'static str,
    pub code: String,
}

fn token_line(private_or_gated: bool) -> &'static str {
    if private_or_gated {
        "\n# This repository needs a token: create one under Settings → Access tokens.\nos.environ[\"HF_TOKEN\"] = \"pdk_...\""
    } else {
        ""
    }
}

/// Snippets for a repo: huggingface_hub, transformers (or datasets), curl.
pub fn for_repo(
    public_url: &str,
    id: &str,
    is_model: bool,
    task: Option<&str>,
    needs_token: bool,
    sample_file: &str,
) -> Vec<Snippet> {
    let tok = token_line(needs_token);
    let repo_type = if is_model {
        ""
    } else {
        ", repo_type=\"dataset\""
    };
    let prefix = if is_model { "" } else { "datasets/" };
    let mut out = vec![Snippet {
        id: "hub",
        title: "huggingface_hub",
        code: format!(
            "# pip install huggingface_hub\nimport os\nos.environ[\"HF_ENDPOINT\"] = \"{public_url}\"{tok}\n\nfrom huggingface_hub import snapshot_download\n\npath = snapshot_download(\"{id}\"{repo_type})\nprint(path)"
        ),
    }];
    if is_model {
        let body = match task {
            Some(t) => format!(
                "from transformers import pipeline\n\npipe = pipeline(\"{t}\", model=\"{id}\")\nprint(pipe(\"Paddock serves models.\"))"
            ),
            None => format!(
                "from transformers import AutoModel, AutoTokenizer\n\ntokenizer = AutoTokenizer.from_pretrained(\"{id}\")\nmodel = AutoModel.from_pretrained(\"{id}\")"
            ),
        };
        out.push(Snippet {
            id: "transformers",
            title: "transformers",
            code: format!(
                "# pip install transformers\nimport os\nos.environ[\"HF_ENDPOINT\"] = \"{public_url}\"  # before importing transformers{tok}\n\n{body}"
            ),
        });
    } else {
        out.push(Snippet {
            id: "datasets",
            title: "datasets",
            code: format!(
                "# pip install datasets\nimport os\nos.environ[\"HF_ENDPOINT\"] = \"{public_url}\"  # before importing datasets{tok}\n\nfrom datasets import load_dataset\n\nds = load_dataset(\"{id}\")"
            ),
        });
    }
    let auth = if needs_token {
        " -H \"Authorization: Bearer $HF_TOKEN\""
    } else {
        ""
    };
    out.push(Snippet {
        id: "curl",
        title: "curl",
        code: format!(
            "curl -L{auth} -o {file_name} \\\n  {public_url}/{prefix}{id}/resolve/main/{sample_file}",
            file_name = sample_file.rsplit('/').next().unwrap_or(sample_file),
        ),
    });
    out
}

/// Client snippets for an endpoint URL.
pub fn for_endpoint(url: &str, task: &str, model: &str) -> Vec<Snippet> {
    if task == hub_types::Task::TextGeneration.as_str() {
        return for_generation(url, model);
    }
    let hf_call = match task {
        "text-classification" => "print(client.text_classification(\"I love this!\"))".to_string(),
        "sentence-similarity" => "print(client.sentence_similarity(\"A cat sits.\", other_sentences=[\"A dog runs.\", \"A cat rests.\"]))".to_string(),
        _ => "print(client.feature_extraction(\"Paddock serves models.\").shape)".to_string(),
    };
    let curl_body = match task {
        "sentence-similarity" => {
            r#"{"inputs": {"source_sentence": "A cat sits.", "sentences": ["A dog runs.", "A cat rests."]}}"#
        }
        _ => r#"{"inputs": "Paddock serves models."}"#,
    };
    let mut out = vec![Snippet {
        id: "hfclient",
        title: "huggingface_hub",
        code: format!(
            "# pip install huggingface_hub\nfrom huggingface_hub import InferenceClient\n\nclient = InferenceClient(\"{url}\", token=\"pdk_...\")\n{hf_call}"
        ),
    }];
    if task != "text-classification" {
        out.push(Snippet {
            id: "openai",
            title: "openai",
            code: format!(
                "# pip install openai\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"{url}/v1\", api_key=\"pdk_...\")\nr = client.embeddings.create(model=\"{model}\", input=[\"Paddock serves models.\"])\nprint(len(r.data[0].embedding))"
            ),
        });
    }
    out.push(Snippet {
        id: "curl",
        title: "curl",
        code: format!(
            "curl {url} \\\n  -H \"Authorization: Bearer $HF_TOKEN\" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{curl_body}'"
        ),
    });
    out
}

/// Client snippets for a text-generation endpoint: streamed chat with the
/// `openai` package and `InferenceClient`, and curl on the SSE route.
fn for_generation(url: &str, model: &str) -> Vec<Snippet> {
    vec![
        Snippet {
            id: "openai",
            title: "openai",
            code: format!(
                "# pip install openai\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"{url}/v1\", api_key=\"pdk_...\")\nstream = client.chat.completions.create(\n    model=\"{model}\",\n    messages=[{{\"role\": \"user\", \"content\": \"Write a haiku about a paddock.\"}}],\n    max_tokens=128,\n    stream=True,\n    stream_options={{\"include_usage\": True}},\n)\nfor chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end=\"\", flush=True)\n    if chunk.usage:\n        print(\"\\n\", chunk.usage)"
            ),
        },
        Snippet {
            id: "hfclient",
            title: "huggingface_hub",
            code: format!(
                "# pip install huggingface_hub\nfrom huggingface_hub import InferenceClient\n\nclient = InferenceClient(base_url=\"{url}\", api_key=\"pdk_...\")\nfor chunk in client.chat_completion(\n    messages=[{{\"role\": \"user\", \"content\": \"Write a haiku about a paddock.\"}}],\n    max_tokens=128,\n    stream=True,\n):\n    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)"
            ),
        },
        Snippet {
            id: "curl",
            title: "curl",
            code: format!(
                "curl -N {url}/v1/chat/completions \\\n  -H \"Authorization: Bearer $HF_TOKEN\" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{{\"model\": \"{model}\", \"stream\": true, \"max_tokens\": 128, \"messages\": [{{\"role\": \"user\", \"content\": \"Write a haiku about a paddock.\"}}]}}'"
            ),
        },
    ]
}
