//! The `[command]` and `[engine]` tables of `provider = "command"`: the
//! trainer's argv templates and their placeholders, where runs train, the
//! inference server that answers with their models, and the engine that
//! runs the trainer (a local process or a Ray job).
//!
//! A config template is a file: [`crate::cli`] reads it and checks its
//! placeholders with [`template_problem`]; nothing is read here.

use std::ops::Range;

use toml::Spanned;

use super::error::{Cx, SpecError};
use super::net::{check_base_url, check_ray_address};
use super::raw::{EngineType, RawCommand, RawEngine, RawSweep};
use super::validate::is_variable_name;
use super::{CommandSettings, Engine, LocalEngine, ProviderKind, RayEngine, Search, Sweep};
use crate::space::{self, Hyperparameters};

/// The placeholder a halving continuation's parent model comes through.
pub const INIT_FROM: &str = "init_from";

/// The placeholder of the rendered config template.
pub const CONFIG: &str = "config";

/// The default `output_root`, relative to the sweep file's folder.
pub const OUTPUT_ROOT: &str = "runs";

impl Sweep {
    /// The placeholders a command sweep's templates may use: its
    /// hyperparameters (in their order), then what ftsweep fills in itself;
    /// `{config}` only with a config template. Empty for other providers.
    pub fn placeholder_names(&self) -> Vec<String> {
        let Some(c) = &self.command else { return Vec::new() };
        known_placeholders(&self.hyperparameters, c.config_template.is_some())
    }
}

fn known_placeholders(hp: &Hyperparameters, config: bool) -> Vec<String> {
    let mut names: Vec<String> = hp.iter().map(|a| a.name.clone()).collect();
    for r in space::RESERVED {
        if !names.iter().any(|n| n == r) && (config || *r != CONFIG) {
            names.push((*r).to_string());
        }
    }
    names
}

/// What is wrong with one template (an argv element, a line of the config
/// template) given the placeholders `known`, if anything: the message and its
/// hint. Unknown names are listed in the order the template uses them.
pub fn template_problem(template: &str, known: &[String]) -> Option<(String, String)> {
    let shown = || known.iter().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ");
    match crate::template::placeholders(template) {
        Err(e) => Some((e.to_string(), format!("write a placeholder as `{{name}}`, one of {}", shown()))),
        Ok(names) => {
            let unknown = names.iter().find(|n| !known.iter().any(|k| k == *n))?;
            let message = if *unknown == CONFIG {
                "unknown placeholder `{config}`: it is the rendered config template, and the sweep sets no \
                 `config_template`"
                    .to_string()
            } else {
                format!(
                    "unknown placeholder `{{{unknown}}}`: no hyperparameter of the file and nothing ftsweep fills in"
                )
            };
            let hint =
                format!("add `{unknown}` under [hyperparameters], or use one of the known placeholders: {}", shown());
            Some((message, hint))
        }
    }
}

/// Whether a template uses `{name}` (a template that does not parse uses
/// nothing; its error is reported on its own).
pub fn template_uses(template: &str, name: &str) -> bool {
    crate::template::placeholders(template).is_ok_and(|names| names.contains(&name))
}

/// The message and hint of successive halving without `{init_from}` (in
/// `train`, or in the config template `with_template`).
pub fn halving_needs_init_from(with_template: bool) -> (String, String) {
    let message = format!(
        "successive halving continues a configuration from its own model, through `{{init_from}}`, and {} uses \
         it: each continuation would train again from the base model",
        if with_template { "neither `train` nor the config template" } else { "`train` never" }
    );
    let hint = "pass the parent model's directory to the trainer, e.g. add `\"--init-from\", \"{init_from}\"` to \
                `train` (it is an empty string for a job from the base model), or use `strategy = \"grid\"`"
        .to_string();
    (message, hint)
}

impl Cx<'_> {
    /// Refuses `[command]` and `[engine]` for another provider: checked
    /// first, since such a table says the file meant `provider = "command"`.
    pub(super) fn command_tables(&self, raw: &RawSweep, provider: ProviderKind) -> Result<(), SpecError> {
        if provider == ProviderKind::Command {
            return Ok(());
        }
        if let Some(c) = &raw.command {
            return Err(self.at(
                c,
                "command",
                "a [command] table only applies to `provider = \"command\"`".into(),
                "remove the table, or set `provider = \"command\"`",
            ));
        }
        if let Some(e) = &raw.engine {
            return Err(self.at(
                e,
                "engine",
                "an [engine] table only applies to `provider = \"command\"`".into(),
                "remove the table, or set `provider = \"command\"`",
            ));
        }
        Ok(())
    }

    /// The `[command]` and `[engine]` tables: required with
    /// `provider = "command"` (and refused otherwise, by
    /// [`Cx::command_tables`]). Paths are resolved against the sweep
    /// file's folder, as the data's are.
    pub(super) fn command(
        &self,
        raw: &RawSweep,
        provider: ProviderKind,
        hp: &Hyperparameters,
        search: &Search,
    ) -> Result<Option<CommandSettings>, SpecError> {
        if provider != ProviderKind::Command {
            return Ok(None);
        }
        let Some(c) = &raw.command else {
            return Err(self.error(
                &raw.provider.as_ref().map_or(0..0, Spanned::span),
                "command",
                "`provider = \"command\"` needs a [command] table: the trainer to run and the server that \
                 evaluates its models"
                    .into(),
                "add `[command]` with `train = [\"python3\", \"train.py\", \"--output-dir\", \"{output_dir}\"]` and \
                 `inference_url = \"http://127.0.0.1:8000/v1\"`; see README.md",
            ));
        };
        let table = c.get_ref();
        let config_template = match &table.config_template {
            None => None,
            Some(t) => Some(self.data_path(t, "command.config_template")?),
        };
        let train = self.train(c, table, hp, config_template.is_some(), search)?;
        let output_root = match &table.output_root {
            None => self.path.parent().unwrap_or(std::path::Path::new("")).join(OUTPUT_ROOT),
            Some(o) => self.data_path(o, "command.output_root")?,
        };
        let Some(url) = &table.inference_url else {
            return Err(self.at(
                c,
                "command.inference_url",
                "missing: the OpenAI-compatible server that answers with the trained models".into(),
                "add e.g. `inference_url = \"http://127.0.0.1:8000/v1\"` (vLLM with `--enable-lora`, or `ftsweep \
                 serve`)",
            ));
        };
        let inference_url = url.get_ref().trim_end_matches('/').to_string();
        check_base_url(&inference_url).map_err(|m| {
            self.at(
                url,
                "command.inference_url",
                m,
                "use an https:// URL, or http://127.0.0.1:PORT/v1 for a server on this machine, with no `user@` part",
            )
        })?;
        let inference_api_key_env = match &table.inference_api_key_env {
            None => None,
            Some(var) if is_variable_name(var.get_ref()) => Some(var.get_ref().clone()),
            Some(var) => {
                return Err(self.at(
                    var,
                    "command.inference_api_key_env",
                    "this names the environment variable that holds the server's key, and is not a variable name"
                        .into(),
                    "write the variable's name, e.g. `inference_api_key_env = \"VLLM_API_KEY\"`, and never the key \
                     itself",
                ));
            }
        };
        let engine = match &raw.engine {
            None => Engine::Local(LocalEngine::default()),
            Some(e) => self.engine(e)?,
        };
        Ok(Some(CommandSettings { train, config_template, output_root, inference_url, inference_api_key_env, engine }))
    }

    /// A trainer command runs on the user's own hardware: no price, so
    /// neither `[pricing]` nor the USD limits apply (`max_trained_tokens`
    /// does).
    pub(super) fn no_price(&self, raw: &RawSweep) -> Result<(), SpecError> {
        let limits = raw.limits.as_ref();
        let usd = [
            ("limits.budget_usd", limits.and_then(|l| l.budget_usd.as_ref()).map(Spanned::span)),
            ("limits.confirm_above_usd", limits.and_then(|l| l.confirm_above_usd.as_ref()).map(Spanned::span)),
            ("pricing", raw.pricing.as_ref().map(Spanned::span)),
        ];
        let Some((key, Some(span))) = usd.into_iter().find(|(_, s)| s.is_some()) else { return Ok(()) };
        Err(self.error(
            &span,
            key,
            "a trainer command runs on your own hardware, and ftsweep knows no price for it: a USD amount cannot \
             apply"
                .into(),
            &format!(
                "remove `{}`; `max_trained_tokens` under [limits] bounds what a command sweep trains",
                key.rsplit('.').next().unwrap_or(key)
            ),
        ))
    }

    /// `[command] train`: a program and its arguments, each a template of
    /// known placeholders; with successive halving, one uses `{init_from}`
    /// (or the config template does, which the caller checks).
    fn train(
        &self,
        c: &Spanned<RawCommand>,
        table: &RawCommand,
        hp: &Hyperparameters,
        config: bool,
        search: &Search,
    ) -> Result<Vec<String>, SpecError> {
        let example = "e.g. `train = [\"python3\", \"train.py\", \"--lr\", \"{learning_rate}\", \"--output-dir\", \
                       \"{output_dir}\"]`";
        let Some(train) = &table.train else {
            return Err(self.at(
                c,
                "command.train",
                "missing: the trainer command, as a list of its program and arguments".into(),
                &format!("add {example}"),
            ));
        };
        let argv = train.get_ref();
        if argv.is_empty() || argv[0].get_ref().trim().is_empty() {
            return Err(self.at(
                train,
                "command.train",
                "the command has no program: its first element must name the program to run".into(),
                &format!("give the program, then its arguments, {example}"),
            ));
        }
        let known = known_placeholders(hp, config);
        for arg in argv {
            if let Some((message, hint)) = template_problem(arg.get_ref(), &known) {
                return Err(self.at(arg, "command.train", message, &hint));
            }
        }
        if search.halving().is_some() && !config && !argv.iter().any(|a| template_uses(a.get_ref(), INIT_FROM)) {
            let (message, hint) = halving_needs_init_from(false);
            return Err(self.at(train, "command.train", message, &hint));
        }
        Ok(argv.iter().map(|a| a.get_ref().clone()).collect())
    }

    /// `[engine]`: `type = "local"` (the default; `gpus`) or `"ray"`
    /// (`address`, `num_gpus`, `num_cpus`, `runtime_env`). A key of the other
    /// type is refused with its fix.
    fn engine(&self, e: &Spanned<RawEngine>) -> Result<Engine, SpecError> {
        let raw = e.get_ref();
        let kind = raw.kind.as_ref().map_or(EngineType::Local, |k| *k.get_ref());
        let other = |key: &str, span: Range<usize>, of: &str, hint: &str| {
            self.error(&span, &format!("engine.{key}"), format!("`{key}` is a setting of the {of} engine"), hint)
        };
        match kind {
            EngineType::Local => {
                let ray_keys = [
                    ("address", raw.address.as_ref().map(Spanned::span)),
                    ("num_gpus", raw.num_gpus.as_ref().map(Spanned::span)),
                    ("num_cpus", raw.num_cpus.as_ref().map(Spanned::span)),
                    ("runtime_env", raw.runtime_env.as_ref().map(Spanned::span)),
                ];
                if let Some((key, Some(span))) =
                    ray_keys.into_iter().filter(|(_, s)| s.is_some()).min_by_key(|(_, s)| s.clone().map(|s| s.start))
                {
                    let hint = format!(
                        "set `type = \"ray\"` under [engine] to run the jobs on a Ray cluster, or remove `{key}`{}",
                        if key == "num_gpus" {
                            " (the local engine gives each job a GPU of `gpus = [0, 1]`)"
                        } else {
                            ""
                        }
                    );
                    return Err(other(key, span, "ray", &hint));
                }
                Ok(Engine::Local(LocalEngine { gpus: self.gpus(raw.gpus.as_ref())? }))
            }
            EngineType::Ray => {
                if let Some(g) = &raw.gpus {
                    return Err(other(
                        "gpus",
                        g.span(),
                        "local",
                        "remove `gpus`: Ray places each job on a GPU it picks; set `num_gpus = 1` to ask for one per \
                         job (or set `type = \"local\"`)",
                    ));
                }
                let Some(address) = &raw.address else {
                    return Err(self.at(
                        e,
                        "engine.address",
                        "missing: the Ray dashboard's address, whose Jobs API takes the submissions".into(),
                        "add e.g. `address = \"http://127.0.0.1:8265\"` under [engine]",
                    ));
                };
                let trimmed = address.get_ref().trim_end_matches('/').to_string();
                check_ray_address(&trimmed).map_err(|m| {
                    self.at(
                        address,
                        "engine.address",
                        m,
                        "give the dashboard's URL, e.g. `address = \"http://127.0.0.1:8265\"`, with no `user@` part",
                    )
                })?;
                Ok(Engine::Ray(RayEngine {
                    address: trimmed,
                    num_gpus: self.resources(raw.num_gpus.as_ref(), "num_gpus", 0.0)?,
                    num_cpus: self.resources(raw.num_cpus.as_ref(), "num_cpus", 1.0)?,
                    runtime_env: match &raw.runtime_env {
                        None => None,
                        Some(t) => Some(self.runtime_env(t)?),
                    },
                }))
            }
        }
    }

    /// `gpus`: GPU indices, at least one, each once.
    fn gpus(&self, gpus: Option<&Spanned<Vec<Spanned<i64>>>>) -> Result<Vec<u32>, SpecError> {
        let Some(list) = gpus else { return Ok(Vec::new()) };
        if list.get_ref().is_empty() {
            return Err(self.at(
                list,
                "engine.gpus",
                "the list is empty".into(),
                "list the GPUs' indices, e.g. `gpus = [0, 1]`, or remove the key to give the jobs no GPU",
            ));
        }
        let mut out: Vec<u32> = Vec::with_capacity(list.get_ref().len());
        for g in list.get_ref() {
            let Ok(i) = u32::try_from(*g.get_ref()) else {
                return Err(self.at(
                    g,
                    "engine.gpus",
                    format!("{} is not a GPU index", g.get_ref()),
                    "use the indices `nvidia-smi` shows, 0 or more, e.g. `gpus = [0, 1]`",
                ));
            };
            if out.contains(&i) {
                return Err(self.at(
                    g,
                    "engine.gpus",
                    format!("GPU {i} is listed twice"),
                    "list each GPU once: one job runs on each at a time",
                ));
            }
            out.push(i);
        }
        Ok(out)
    }

    /// `num_gpus` or `num_cpus`: a finite amount, 0 or more (Ray takes
    /// fractions).
    fn resources(&self, v: Option<&Spanned<f64>>, key: &str, default: f64) -> Result<f64, SpecError> {
        let Some(v) = v else { return Ok(default) };
        let x = *v.get_ref();
        if x.is_finite() && x >= 0.0 {
            return Ok(x);
        }
        Err(self.at(
            v,
            &format!("engine.{key}"),
            format!("{x} is not allowed"),
            &format!("give the amount each job asks Ray for, 0 or more (fractions allowed), e.g. `{key} = 1`"),
        ))
    }

    /// `runtime_env`: passed to Ray as written, as JSON.
    fn runtime_env(&self, t: &Spanned<toml::Table>) -> Result<serde_json::Value, SpecError> {
        to_json(&toml::Value::Table(t.get_ref().clone())).map_err(|m| {
            self.at(
                t,
                "engine.runtime_env",
                m,
                "write Ray's runtime_env as a table of strings, numbers, lists and tables, e.g. \
                 `runtime_env = { working_dir = \".\" }`",
            )
        })
    }
}

/// A TOML value as JSON: dates as their text; a number JSON cannot hold
/// (NaN, infinity) is refused.
fn to_json(v: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} cannot be sent to Ray (JSON has no such number)"))?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter().map(|(k, v)| Ok((k.clone(), to_json(v)?))).collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use crate::space::Kind;
    use crate::spec::tests::*;
    use crate::spec::*;

    /// A command sweep: `[command]` at line 7, `train` at 8 and 9,
    /// `[hyperparameters]` at 11.
    pub(in crate::spec) const CMD: &str = r#"
name = "c"
provider = "command"
base_model = "Qwen/Qwen2.5-0.5B-Instruct"
training_file = "../examples/data/topics-train.jsonl"
validation_file = "../examples/data/topics-valid.jsonl"
[command]
train = ["python3", "train.py", "--epochs", "{n_epochs}", "--lr", "{learning_rate}",
         "--lora-r", "{lora_r}", "--seed", "{seed}", "--output-dir", "{output_dir}"]
inference_url = "http://127.0.0.1:8000/v1/"
[hyperparameters]
n_epochs = [1, 2]
lora_r = [8, 16]
learning_rate = [1e-4, 2e-4]
"#;

    fn command(text: &str) -> CommandSettings {
        parse_str(text).unwrap().command.expect("a command sweep has its settings")
    }

    #[test]
    fn a_command_sweep_parses_with_its_defaults() {
        let s = parse_str(CMD).unwrap();
        assert_eq!(s.provider, ProviderKind::Command);
        assert_eq!(s.base_model, "Qwen/Qwen2.5-0.5B-Instruct");
        let c = s.command.as_ref().unwrap();
        assert_eq!(c.train[..3], ["python3", "train.py", "--epochs"]);
        assert_eq!(c.train.len(), 12);
        assert_eq!(c.output_root, Path::new("sweeps/runs"), "relative to the sweep file's folder");
        assert_eq!(c.inference_url, "http://127.0.0.1:8000/v1", "without the trailing slash");
        assert_eq!((c.config_template.as_ref(), c.inference_api_key_env.as_ref()), (None, None));
        assert_eq!(c.engine, Engine::Local(LocalEngine { gpus: vec![] }), "the default engine");
        // The declared names around the free ones, in the order written.
        let axes: Vec<(&str, Kind, bool)> =
            s.hyperparameters.iter().map(|a| (a.name.as_str(), a.kind, a.written)).collect();
        assert_eq!(
            axes,
            [
                ("n_epochs", Kind::Int, true),
                ("lora_r", Kind::Int, true),
                ("learning_rate", Kind::Float, true),
                ("seed", Kind::Int, false)
            ]
        );
        assert_eq!(
            s.placeholder_names(),
            [
                "n_epochs",
                "lora_r",
                "learning_rate",
                "seed",
                "base_model",
                "training_file",
                "validation_file",
                "output_dir",
                "run_id",
                "init_from",
                "ftsweep"
            ]
        );
        let other = command(&CMD.replace(
            "inference_url = ",
            "config_template = \"axolotl.yml\"\noutput_root = \"/scratch/runs\"\ninference_api_key_env = \"VLLM_API_KEY\"\ninference_url = ",
        ));
        assert_eq!(other.config_template.as_deref(), Some(Path::new("sweeps/axolotl.yml")));
        assert_eq!(other.output_root, Path::new("/scratch/runs"));
        assert_eq!(other.inference_api_key_env.as_deref(), Some("VLLM_API_KEY"));
        // Other providers have none.
        assert_eq!(parse_str(GOOD).unwrap().command, None);
        assert!(parse_str(GOOD).unwrap().placeholder_names().is_empty());
    }

    #[test]
    fn an_unknown_placeholder_is_refused_at_its_line_with_the_known_ones() {
        let e = err(&CMD.replace("{lora_r}", "{lora_rank}"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("command.train")), "{e}");
        assert!(e.message.starts_with("unknown placeholder `{lora_rank}`"), "{e}");
        let hint = e.hint.as_deref().unwrap();
        assert!(hint.starts_with("add `lora_rank` under [hyperparameters]"), "{e}");
        for known in ["{n_epochs}", "{lora_r}", "{learning_rate}", "{seed}", "{init_from}", "{ftsweep}", "{run_id}"] {
            assert!(hint.contains(known), "{known}: {e}");
        }
        assert!(!hint.contains("{config}"), "no config template: {e}");
        // `{config}` is known with a config template only.
        let e = err(&CMD.replace("\"train.py\"", "\"train.py\", \"{config}\""));
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("sets no `config_template`"), "{e}");
        let with = CMD
            .replace("\"train.py\"", "\"train.py\", \"{config}\"")
            .replace("inference_url = ", "config_template = \"axolotl.yml\"\ninference_url = ");
        assert!(command(&with).train.contains(&"{config}".to_string()));
        // Literal braces are text; a template that does not parse is refused.
        assert!(parse_str(&CMD.replace("\"train.py\"", "\"--json={{\\\"a\\\": 1}}\"")).is_ok());
        let e = err(&CMD.replace("\"{seed}\"", "\"{seed\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("command.train")), "{e}");
        assert!(e.message.contains("unmatched `{`"), "{e}");
        let e = err(&CMD.replace("\"{seed}\"", "\"{se ed}\""));
        assert!(e.message.contains("not a placeholder name"), "{e}");
    }

    #[test]
    fn the_command_table_is_required_complete_and_only_for_the_command_provider() {
        let (head, _) = CMD.split_once("[command]").unwrap();
        let (_, hp) = CMD.split_once("[hyperparameters]").unwrap();
        let e = err(&format!("{head}[hyperparameters]{hp}"));
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("command")), "at the provider: {e}");
        assert!(e.message.contains("needs a [command] table"), "{e}");
        let e = err(&CMD.replace("inference_url = \"http://127.0.0.1:8000/v1/\"\n", ""));
        assert_eq!(e.key.as_deref(), Some("command.inference_url"), "{e}");
        assert!(e.message.starts_with("missing"), "{e}");
        let (before, after) = CMD.split_once("train = [").unwrap();
        let after = after.split_once("}\"]\n").unwrap().1;
        let e = err(&format!("{before}{after}"));
        assert_eq!(e.key.as_deref(), Some("command.train"), "{e}");
        assert!(e.message.starts_with("missing"), "{e}");
        for empty in ["train = []", "train = [\" \"]"] {
            let e = err(&format!("{before}{empty}\n{after}"));
            assert_eq!((e.line, e.key.as_deref()), (Some(8), Some("command.train")), "{e}");
            assert!(e.message.contains("no program"), "{e}");
        }
        let e = err(&CMD.replace("inference_url", "inference_uri"));
        assert!(e.message.contains("unknown field `inference_uri`"), "{e}");
        // [command] and [engine] with another provider.
        let e = err(&format!("{GOOD}[command]\ntrain = [\"x\"]\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(18), Some("command")), "{e}");
        assert_eq!(e.message, "a [command] table only applies to `provider = \"command\"`");
        let e = err(&format!("{GOOD}[engine]\ntype = \"local\"\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(18), Some("engine")), "{e}");
        assert!(e.message.contains("[engine] table only applies"), "{e}");
    }

    #[test]
    fn the_inference_server_and_its_key_variable_are_checked() {
        let e = err(&CMD.replace("127.0.0.1:8000", "gpu-box.internal:8000"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("command.inference_url")), "{e}");
        assert!(e.message.contains("plain http is refused"), "{e}");
        assert!(err(&CMD.replace("http://127.0.0.1", "http://me@127.0.0.1")).message.contains("user-info"));
        assert!(parse_str(&CMD.replace("http://127.0.0.1", "https://gpu-box.internal")).is_ok());
        let e = err(&CMD.replace("inference_url = ", "inference_api_key_env = \"sk-123 x\"\ninference_url = "));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("command.inference_api_key_env")), "{e}");
        assert!(e.message.contains("not a variable name"), "{e}");
    }

    /// CMD with `[engine]` and `lines` appended (line 15 on).
    fn engine(lines: &str) -> String {
        format!("{CMD}[engine]\n{lines}\n")
    }

    #[test]
    fn the_engines_keys_are_checked_and_a_key_of_the_other_type_is_refused_with_its_fix() {
        assert_eq!(
            command(&engine("type = \"local\"\ngpus = [1, 0]")).engine,
            Engine::Local(LocalEngine { gpus: vec![1, 0] })
        );
        let ray = command(&engine(
            "type = \"ray\"\naddress = \"http://10.0.0.5:8265/\"\nnum_gpus = 0.5\nruntime_env = { working_dir = \".\", env_vars = { A = \"1\" } }",
        ));
        assert_eq!(
            ray.engine,
            Engine::Ray(RayEngine {
                address: "http://10.0.0.5:8265".into(),
                num_gpus: 0.5,
                num_cpus: 1.0,
                runtime_env: Some(serde_json::json!({ "working_dir": ".", "env_vars": { "A": "1" } })),
            }),
            "plain http to a cluster's host: Ray is sent no key"
        );
        let Engine::Ray(r) =
            command(&engine("type = \"ray\"\naddress = \"https://ray.example.com\"\nnum_cpus = 2")).engine
        else {
            panic!("a Ray engine")
        };
        assert_eq!((r.num_gpus, r.num_cpus, r.runtime_env), (0.0, 2.0, None), "the defaults");
        for (lines, line, key, message, hint) in [
            (
                "address = \"http://127.0.0.1:8265\"",
                16,
                "engine.address",
                "a setting of the ray engine",
                "type = \"ray\"",
            ),
            ("type = \"local\"\nnum_gpus = 1", 17, "engine.num_gpus", "a setting of the ray engine", "gpus = [0, 1]"),
            (
                "runtime_env = { pip = [\"x\"] }",
                16,
                "engine.runtime_env",
                "of the ray engine",
                "or remove `runtime_env`",
            ),
            (
                "type = \"ray\"\naddress = \"http://127.0.0.1:8265\"\ngpus = [0]",
                18,
                "engine.gpus",
                "a setting of the local engine",
                "num_gpus = 1",
            ),
            ("type = \"ray\"", 15, "engine.address", "missing", "address = \"http://127.0.0.1:8265\""),
            ("type = \"ray\"\naddress = \"ftp://h\"", 17, "engine.address", "unsupported scheme", "8265"),
            ("type = \"ray\"\naddress = \"http://u:p@h:8265\"", 17, "engine.address", "user-info", "8265"),
            ("type = \"ray\"\naddress = \"h:8265\"", 17, "engine.address", "unsupported scheme `h`", "8265"),
            (
                "type = \"ray\"\naddress = \"http://h\"\nnum_gpus = -1",
                18,
                "engine.num_gpus",
                "-1 is not allowed",
                "0 or more",
            ),
            (
                "type = \"ray\"\naddress = \"http://h\"\nnum_cpus = nan",
                18,
                "engine.num_cpus",
                "NaN is not allowed",
                "0 or more",
            ),
            (
                "type = \"ray\"\naddress = \"http://h\"\nnum_cpus = inf",
                18,
                "engine.num_cpus",
                "inf is not allowed",
                "0 or more",
            ),
            (
                "type = \"ray\"\naddress = \"http://h\"\nruntime_env = { x = nan }",
                18,
                "engine.runtime_env",
                "NaN cannot be sent",
                "runtime_env",
            ),
            ("gpus = []", 16, "engine.gpus", "the list is empty", "gpus = [0, 1]"),
            ("gpus = [0, 1, 0]", 16, "engine.gpus", "GPU 0 is listed twice", "once"),
            ("gpus = [-1]", 16, "engine.gpus", "-1 is not a GPU index", "nvidia-smi"),
            (
                "type = \"slurm\"",
                16,
                "engine.type",
                "unknown engine `slurm`",
                "`type = \"local\"` (the default) or `type = \"ray\"`",
            ),
            ("typ = \"ray\"", 16, "engine.typ", "unknown field `typ`", "remove or rename"),
        ] {
            let e = err(&engine(lines));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{lines}: {e}");
            assert!(e.message.contains(message), "{lines}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{lines}: {e}");
        }
    }

    #[test]
    fn free_names_are_placeholder_names_typed_by_their_values_and_never_auto() {
        let s = parse_str(&CMD.replace("lora_r = [8, 16]", "lora_r = [8, 16]\nweight = [-1.5, 2]\nzeta = 3")).unwrap();
        assert_eq!(s.hyperparameters.get("weight").unwrap().kind, Kind::Float);
        assert_eq!(*s.hyperparameters.domain("weight"), Domain::Values(vec![Some(-1.5), Some(2.0)]));
        assert_eq!(s.hyperparameters.get("zeta").unwrap().kind, Kind::Int);
        let names: Vec<&str> = s.hyperparameters.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["n_epochs", "lora_r", "weight", "zeta", "learning_rate", "seed"], "the order written");
        // An integer among floats makes a float axis.
        assert_eq!(
            parse_str(&CMD.replace("[8, 16]", "[8, 16.5]")).unwrap().hyperparameters.get("lora_r").unwrap().kind,
            Kind::Float
        );
        for (from, to, line, key, message, hint) in [
            (
                "lora_r = [8, 16]",
                "lora_r = [8, \"auto\"]",
                13,
                "hyperparameters.lora_r",
                "cannot be \"auto\"",
                "no default for `{lora_r}`",
            ),
            (
                "n_epochs = [1, 2]",
                "n_epochs = [\"auto\"]",
                12,
                "hyperparameters.n_epochs",
                "cannot be \"auto\"",
                "no default for `{n_epochs}`",
            ),
            ("n_epochs = [1, 2]\n", "", 11, "hyperparameters.n_epochs", "missing", "n_epochs = [1, 2, 3]"),
            (
                "lora_r = [8, 16]",
                "Lora-R = [8]",
                13,
                "hyperparameters.Lora-R",
                "cannot be a hyperparameter name",
                "lower-case",
            ),
            (
                "lora_r = [8, 16]",
                "2x = [8]",
                13,
                "hyperparameters.2x",
                "cannot be a hyperparameter name",
                "not starting with a digit",
            ),
            (
                "lora_r = [8, 16]",
                "output_dir = [8]",
                13,
                "hyperparameters.output_dir",
                "fills in itself",
                "my_output_dir",
            ),
            ("lora_r = [8, 16]", "config = [8]", 13, "hyperparameters.config", "fills in itself", "{config}"),
            (
                "lora_r = [8, 16]",
                "lora_r = [true]",
                13,
                "hyperparameters.lora_r",
                "expected a whole number, found boolean",
                "lora_r = [8, 16]",
            ),
            (
                "lora_r = [8, 16]",
                "lora_r = [inf]",
                13,
                "hyperparameters.lora_r",
                "inf is not allowed: the value must be a finite number",
                "lora_r",
            ),
            ("lora_r = [8, 16]", "lora_r = [8, 8]", 13, "hyperparameters.lora_r", "8 is listed twice", "once"),
        ] {
            let e = err(&CMD.replace(from, to));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{to}: {e}");
            assert!(e.message.contains(message), "{to}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{to}: {e}");
        }
        // Random search: distributions, log-uniform above 0.
        let random = CMD.replace("[command]", "[search]\nstrategy = \"random\"\nruns = 4\n[command]");
        let s = parse_str(
            &random
                .replace("[1e-4, 2e-4]", "{ log_uniform = [1e-5, 1e-3] }")
                .replace("[8, 16]", "{ uniform = [4, 64] }"),
        )
        .unwrap();
        assert_eq!(*s.hyperparameters.domain("learning_rate"), Domain::LogUniform(1e-5, 1e-3));
        assert_eq!(s.hyperparameters.get("lora_r").unwrap().kind, Kind::Int, "integer bounds: an integer axis");
        let e = err(&random.replace("[1e-4, 2e-4]", "{ log_uniform = [0, 1e-3] }"));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.learning_rate"), "{e}");
        assert!(e.message.contains("log-uniform bounds must be greater than 0"), "{e}");
    }

    #[test]
    fn the_same_free_names_written_in_another_order_draw_other_random_runs() {
        let random = CMD.replace("[command]", "[search]\nstrategy = \"random\"\nruns = 3\n[command]").replace(
            "lora_r = [8, 16]\nlearning_rate = [1e-4, 2e-4]",
            "lora_r = { uniform = [4, 64] }\nlearning_rate = { log_uniform = [1e-5, 1e-3] }",
        );
        let swapped = random.replace(
            "lora_r = { uniform = [4, 64] }\nlearning_rate = { log_uniform = [1e-5, 1e-3] }",
            "learning_rate = { log_uniform = [1e-5, 1e-3] }\nlora_r = { uniform = [4, 64] }",
        );
        let data = crate::plan::DataIdentity {
            training_sha256: "t".into(),
            validation_sha256: "v".into(),
            server: "command".into(),
        };
        let ids = |text: &str| -> Vec<String> {
            crate::plan::expand(&parse_str(text).unwrap(), &data).into_iter().map(|r| r.run_id).collect()
        };
        assert_eq!(ids(&random), ids(&random), "the same file draws the same runs");
        assert_ne!(ids(&random), ids(&swapped), "the axes are drawn in the order written");
    }

    #[test]
    fn successive_halving_needs_init_from() {
        let halving = CMD
            .replace("[command]", "[search]\nstrategy = \"successive_halving\"\nmax_epochs = 3\n[command]")
            .replace("n_epochs = [1, 2]\n", "");
        let e = err(&halving);
        assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("command.train")), "{e}");
        assert!(e.message.contains("each continuation would train again from the base model"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("\"--init-from\", \"{init_from}\""), "{e}");
        let with = halving.replace("\"--seed\"", "\"--init-from={init_from}\", \"--seed\"");
        let s = parse_str(&with).unwrap();
        assert!(s.placeholder_names().contains(&"n_epochs".to_string()), "halving sets n_epochs: {s:?}");
        // With a config template, `{init_from}` may be in it: checked where it is read.
        let template = halving.replace("inference_url = ", "config_template = \"t.yml\"\ninference_url = ");
        assert!(parse_str(&template).is_ok());
        // Other searches need no `{init_from}`.
        assert!(parse_str(&CMD.replace("[command]", "[search]\nepochs_from_checkpoints = true\n[command]")).is_ok());
    }

    #[test]
    fn usd_amounts_are_refused_for_a_trainer_command() {
        for (extra, line, key) in [
            ("[limits]\nbudget_usd = 10.0\n", 16, "limits.budget_usd"),
            ("[limits]\nconfirm_above_usd = 5.0\n", 16, "limits.confirm_above_usd"),
            (
                "[pricing]\ntraining_per_million = 1.0\ninput_per_million = 1.0\noutput_per_million = 1.0\n",
                15,
                "pricing",
            ),
        ] {
            let e = err(&format!("{CMD}{extra}"));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.message.contains("your own hardware"), "{e}");
            assert!(e.hint.as_deref().unwrap().contains("max_trained_tokens"), "{e}");
        }
        let tokens = parse_str(&format!("{CMD}[limits]\nmax_trained_tokens = 1000000\n")).unwrap();
        assert_eq!(tokens.limits.max_trained_tokens, Some(1_000_000));
    }
}
