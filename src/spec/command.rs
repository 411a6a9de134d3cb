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
    /// The `[command]` and `[engine]` tables: required and allowed with
    /// `provider = "command"` only. Paths are resolved against the sweep
    /// file's folder, as the data's are.
    pub(super) fn command(
        &self,
        raw: &RawSweep,
        provider: ProviderKind,
        hp: &Hyperparameters,
        search: &Search,
    ) -> Result<Option<CommandSettings>, SpecError> {
        if provider != ProviderKind::Command {
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
        if matches!(search, Search::SuccessiveHalving(_))
            && !config
            && !argv.iter().any(|a| template_uses(a.get_ref(), INIT_FROM))
        {
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
