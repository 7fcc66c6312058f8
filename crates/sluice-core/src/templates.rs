//! Quick-deploy templates (R1.10): named presets of image, port, health path, start command, env
//! and GPU defaults for popular serving stacks, with the few questions each needs. Pure: a
//! template plus the user's answers renders to an [`EndpointDraft`], which is then validated
//! like any other.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{EndpointDraft, FieldError};

/// One question a template asks.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    /// `None`: the answer is required.
    pub default: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// Image, start command and env values may use `{param}` placeholders.
    pub image: &'static str,
    pub start_command: Option<&'static str>,
    pub http_port: u16,
    pub health_check_path: &'static str,
    pub env: &'static [(&'static str, &'static str)],
    pub gpus_per_worker: u32,
    /// Seconds a worker may take to become healthy (model downloads are slow).
    pub startup_timeout_secs: u32,
    /// The engine's sleep mode, when it has one: (sleep path, wake path), used when the
    /// `max_sleeping` answer is above 0.
    pub sleep: Option<(&'static str, &'static str)>,
    /// The model staged into the node's cache before a worker starts (`hf://{model}`), when
    /// the answer is a Hugging Face repository id; the engine then loads it offline.
    pub model: Option<&'static str>,
    pub params: &'static [Param],
}

const NAME: Param = Param { name: "name", description: "endpoint name", default: Some("{template}") };
const GPU_TYPE: Param =
    Param { name: "gpu_type", description: "GPU type (default: the platform's first)", default: Some("") };
const MAX_WORKERS: Param = Param { name: "max_workers", description: "most workers to scale to", default: Some("3") };
const ACTIVE: Param =
    Param { name: "active_workers", description: "workers kept running (0 scales to zero)", default: Some("0") };

pub const TEMPLATES: &[Template] = &[
    Template {
        name: "vllm",
        title: "OpenAI-compatible LLM server (vLLM)",
        description: "Serves a Hugging Face model with vLLM's OpenAI-compatible API (/v1/chat/completions).",
        image: "vllm/vllm-openai:{version}",
        start_command: Some(
            "exec python3 -m vllm.entrypoints.openai.api_server --host 0.0.0.0 --port \"$PORT\" \
             --model {model} --max-model-len {max_model_len} --tensor-parallel-size {gpus} --enable-sleep-mode",
        ),
        http_port: 8000,
        health_check_path: "/health",
        // VLLM_SERVER_DEV_MODE serves /sleep and /wake_up (vLLM's sleep mode: level 1 offloads
        // the weights to host memory and drops the KV cache; a wake takes well under a second).
        env: &[("VLLM_SERVER_DEV_MODE", "1")],
        gpus_per_worker: 1,
        startup_timeout_secs: 1800,
        sleep: Some(("/sleep?level=1", "/wake_up")),
        model: Some("hf://{model}"),
        params: &[
            Param { name: "model", description: "Hugging Face model id, e.g. Qwen/Qwen2.5-7B-Instruct", default: None },
            Param { name: "max_model_len", description: "context length", default: Some("8192") },
            Param { name: "gpus", description: "GPUs per worker (tensor parallel)", default: Some("1") },
            Param { name: "version", description: "image tag", default: Some("latest") },
            Param {
                name: "max_sleeping",
                description: "workers that sleep (weights in host memory) instead of stopping; 0: none",
                default: Some("1"),
            },
            NAME,
            GPU_TYPE,
            ACTIVE,
            MAX_WORKERS,
        ],
    },
    Template {
        name: "tgi",
        title: "Hugging Face Text Generation Inference",
        description: "Serves a Hugging Face model with TGI (/generate, /v1/chat/completions).",
        image: "ghcr.io/huggingface/text-generation-inference:{version}",
        start_command: None,
        http_port: 8080,
        health_check_path: "/health",
        env: &[("MODEL_ID", "{model}"), ("NUM_SHARD", "{gpus}")],
        gpus_per_worker: 1,
        startup_timeout_secs: 1800,
        sleep: None,
        model: Some("hf://{model}"),
        params: &[
            Param { name: "model", description: "Hugging Face model id", default: None },
            Param { name: "gpus", description: "GPUs per worker (shards)", default: Some("1") },
            Param { name: "version", description: "image tag", default: Some("latest") },
            NAME,
            GPU_TYPE,
            ACTIVE,
            MAX_WORKERS,
        ],
    },
    Template {
        name: "image-gen",
        title: "Image generation (ComfyUI)",
        description: "A ComfyUI server for Stable Diffusion and Flux workflows (POST /prompt).",
        image: "{image}",
        start_command: Some("exec python3 main.py --listen 0.0.0.0 --port \"$PORT\""),
        http_port: 8188,
        health_check_path: "/system_stats",
        env: &[],
        gpus_per_worker: 1,
        startup_timeout_secs: 900,
        sleep: None,
        model: None,
        params: &[
            Param { name: "image", description: "a ComfyUI image", default: Some("yanwk/comfyui-boot:cu124-slim") },
            NAME,
            GPU_TYPE,
            ACTIVE,
            MAX_WORKERS,
        ],
    },
    Template {
        name: "speech-to-text",
        title: "Speech to text (faster-whisper, OpenAI-compatible)",
        description: "Transcription with faster-whisper behind OpenAI's /v1/audio/transcriptions API.",
        image: "fedirz/faster-whisper-server:{version}",
        start_command: None,
        http_port: 8000,
        health_check_path: "/health",
        env: &[("WHISPER__MODEL", "{model}"), ("UVICORN_PORT", "8000")],
        gpus_per_worker: 1,
        startup_timeout_secs: 900,
        sleep: None,
        model: Some("hf://{model}"),
        params: &[
            Param { name: "model", description: "Whisper model", default: Some("Systran/faster-whisper-large-v3") },
            Param { name: "version", description: "image tag", default: Some("latest-cuda") },
            NAME,
            GPU_TYPE,
            ACTIVE,
            MAX_WORKERS,
        ],
    },
    Template {
        name: "custom",
        title: "Bring your own image",
        description: "Any image that serves HTTP on one port and answers a health path with 200.",
        image: "{image}",
        start_command: None,
        http_port: 0,
        health_check_path: "{health_check_path}",
        env: &[],
        gpus_per_worker: 1,
        startup_timeout_secs: 600,
        sleep: None,
        model: None,
        params: &[
            Param { name: "image", description: "image reference", default: None },
            Param { name: "port", description: "the port it listens on", default: Some("8000") },
            Param { name: "health_check_path", description: "path answering 200 when ready", default: Some("/health") },
            Param {
                name: "start_command",
                description: "command run as shell -c (default: the image's)",
                default: Some(""),
            },
            NAME,
            GPU_TYPE,
            ACTIVE,
            MAX_WORKERS,
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

fn fill(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn number(field: &str, v: &str) -> Result<i64, FieldError> {
    v.parse().map_err(|_| FieldError::new(field, "must be a whole number"))
}

impl Template {
    /// Renders the template with the user's answers (`set`, from `--set k=v`). Unknown keys and
    /// missing required answers are errors naming the key (`set.model`).
    pub fn render(&self, set: &BTreeMap<String, String>) -> Result<EndpointDraft, FieldError> {
        for k in set.keys() {
            if !self.params.iter().any(|p| p.name == k) {
                let known: Vec<&str> = self.params.iter().map(|p| p.name).collect();
                // The unknown key is not repeated (it may be a pasted secret); the known ones are.
                return Err(FieldError::new(
                    "set",
                    format!("template {} has no such parameter; it takes: {}", self.name, known.join(", ")),
                ));
            }
        }
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        for p in self.params {
            let v = match (set.get(p.name), p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.replace("{template}", self.name),
                (None, None) => {
                    return Err(FieldError::new(
                        format!("set.{}", p.name),
                        format!("template {} needs {} ({}): --set {}=...", self.name, p.name, p.description, p.name),
                    ));
                }
            };
            if v.contains(['{', '}']) {
                return Err(FieldError::new(format!("set.{}", p.name), "must not contain '{' or '}'"));
            }
            values.insert(p.name, v);
        }
        let get = |k: &str| values.get(k).cloned().unwrap_or_default();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let gpus = match values.get("gpus") {
            Some(g) => number("set.gpus", g)?,
            None => i64::from(self.gpus_per_worker),
        };
        let http_port = match values.get("port") {
            Some(p) => number("set.port", p)?,
            None => i64::from(self.http_port),
        };
        let max_sleeping = match values.get("max_sleeping") {
            Some(n) => number("set.max_sleeping", n)?,
            None => 0,
        };
        let sleeping = self.sleep.filter(|_| max_sleeping > 0);
        let start_command = match values.get("start_command") {
            Some(c) => non_empty(c.clone()),
            None => self.start_command.map(|c| fill(c, &values)),
        };
        Ok(EndpointDraft {
            name: Some(get("name")),
            image: Some(fill(self.image, &values)),
            start_command,
            http_port: Some(http_port),
            health_check_path: Some(fill(self.health_check_path, &values)),
            env: Some(self.env.iter().map(|(k, v)| ((*k).to_owned(), fill(v, &values))).collect()),
            gpus_per_worker: Some(gpus),
            gpu_type: non_empty(get("gpu_type")),
            startup_timeout_secs: Some(i64::from(self.startup_timeout_secs)),
            active_workers: Some(number("set.active_workers", &get("active_workers"))?),
            max_workers: Some(number("set.max_workers", &get("max_workers"))?),
            sleep_path: sleeping.map(|(s, _)| s.to_owned()),
            wake_path: sleeping.map(|(_, w)| w.to_owned()),
            max_sleeping: sleeping.map(|_| max_sleeping),
            models: self
                .model
                .map(|m| fill(m, &values))
                .filter(|m| m.strip_prefix("hf://").is_some_and(crate::models::is_repo_id))
                .map(|source| vec![crate::models::ModelDraft { source, include: None, exclude: None }]),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EndpointSpec, RuntimeKind, ValidationContext};

    fn ctx() -> ValidationContext {
        ValidationContext {
            gpu_types: vec!["SIM".into(), "A100".into(), "H100".into()],
            data_centers: vec!["local".into()],
            max_workers_quota: 10,
            runtime: RuntimeKind::Docker,
        }
    }

    fn set(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_template_renders_a_valid_endpoint() {
        for t in TEMPLATES {
            let mut answers = set(&[]);
            for p in t.params.iter().filter(|p| p.default.is_none()) {
                answers.insert(
                    p.name.into(),
                    if p.name == "image" { "ghcr.io/me/app:1".into() } else { "org/model".into() },
                );
            }
            let d = t.render(&answers).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            let s = EndpointSpec::validate(d, &ctx()).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            assert_eq!(s.name, t.name);
            assert!(s.image.as_deref().is_some_and(|i| !i.contains('{')), "{}: {:?}", t.name, s.image);
            assert!(!s.health_check_path.contains('{'));
            assert!(s.env.values().all(|v| !v.contains('{')), "{}: {:?}", t.name, s.env);
            assert!(s.start_command.as_deref().is_none_or(|c| !c.contains('{')), "{}: {:?}", t.name, s.start_command);
        }
    }

    #[test]
    fn answers_fill_placeholders_and_defaults() {
        let t = find("vllm").unwrap();
        let d = t.render(&set(&[("model", "Qwen/Qwen2.5-7B"), ("gpus", "2"), ("gpu_type", "H100")])).unwrap();
        assert_eq!(d.image.as_deref(), Some("vllm/vllm-openai:latest"));
        let cmd = d.start_command.clone().unwrap();
        assert!(cmd.contains("--model Qwen/Qwen2.5-7B") && cmd.contains("--tensor-parallel-size 2"), "{cmd}");
        assert!(cmd.contains("--max-model-len 8192"), "{cmd}");
        assert_eq!((d.gpus_per_worker, d.gpu_type.as_deref(), d.http_port), (Some(2), Some("H100"), Some(8000)));
        // Sleep mode with vLLM's own flags and endpoints, on by default.
        assert!(cmd.contains("--enable-sleep-mode"), "{cmd}");
        assert_eq!(d.env.as_ref().unwrap()["VLLM_SERVER_DEV_MODE"], "1");
        assert_eq!(
            (d.sleep_path.as_deref(), d.wake_path.as_deref(), d.max_sleeping),
            (Some("/sleep?level=1"), Some("/wake_up"), Some(1))
        );
        let spec = EndpointSpec::validate(d, &ctx()).unwrap();
        assert!(spec.sleep.enabled());
        let off = t.render(&set(&[("model", "m"), ("max_sleeping", "0")])).unwrap();
        assert_eq!((off.sleep_path, off.max_sleeping), (None, None));
        let tgi = find("tgi").unwrap().render(&set(&[("model", "m/x"), ("name", "chat")])).unwrap();
        assert_eq!(tgi.env.unwrap()["MODEL_ID"], "m/x");
        // The model is staged into the node's cache, where the engine loads it offline.
        assert_eq!(tgi.models.unwrap()[0].source, "hf://m/x");
        let spec = EndpointSpec::validate(t.render(&set(&[("model", "Qwen/Qwen2.5-7B")])).unwrap(), &ctx()).unwrap();
        assert_eq!(spec.models[0].source.display(), "hf://Qwen/Qwen2.5-7B");
        // A local path is the engine's business: nothing to stage.
        assert_eq!(t.render(&set(&[("model", "/models/q")])).unwrap().models, None);
        assert_eq!(tgi.name.as_deref(), Some("chat"));
        let custom = find("custom").unwrap().render(&set(&[("image", "me/app:2"), ("port", "9000")])).unwrap();
        assert_eq!((custom.http_port, custom.start_command), (Some(9000), None));
        assert_eq!(custom.gpu_type, None, "the platform's default type");
    }

    #[test]
    fn bad_answers_name_the_key() {
        let t = find("vllm").unwrap();
        assert_eq!(t.render(&set(&[])).unwrap_err().field, "set.model");
        assert_eq!(t.render(&set(&[("model", "m"), ("modle", "x")])).unwrap_err().field, "set");
        assert_eq!(t.render(&set(&[("model", "m"), ("gpus", "two")])).unwrap_err().field, "set.gpus");
        assert_eq!(t.render(&set(&[("model", "{x}")])).unwrap_err().field, "set.model");
        let c = find("custom").unwrap();
        assert_eq!(c.render(&set(&[("image", "a"), ("port", "x")])).unwrap_err().field, "set.port");
        assert!(find("nope").is_none());
    }
}
