//! The search space: the hyperparameters each provider accepts (names,
//! types, ranges), and the values or distributions a sweep gives them. Pure:
//! no I/O.

/// Which provider trains the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum ProviderKind {
    /// The embedded CPU trainer.
    Local,
    /// A server that speaks the OpenAI fine-tuning protocol.
    OpenAi,
    /// The user's own trainer command, run as a local process or a Ray job,
    /// its models served by an OpenAI-compatible inference server.
    Command,
    /// Together AI's fine-tuning API (its own paths and names), its models
    /// answering through its OpenAI-compatible chat completions, serverless
    /// or on a dedicated endpoint made for the evaluation.
    Together,
    /// Azure OpenAI's v1 data plane (OpenAI's job shapes), each model
    /// deployed through Azure Resource Manager before it answers.
    Azure,
}

/// Every provider, in the order tables and tests list them.
pub const PROVIDERS: [ProviderKind; 5] =
    [ProviderKind::Local, ProviderKind::OpenAi, ProviderKind::Azure, ProviderKind::Together, ProviderKind::Command];

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a sweep's jobs train: `method` at the top of the sweep file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Method {
    /// Supervised fine-tuning on chat lines (the default).
    #[default]
    Sft,
    /// Direct preference optimization on preference pairs (`input`,
    /// `preferred_output`, `non_preferred_output`).
    Dpo,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// DPO's `beta`: how far the model may move from the reference model.
pub const BETA: &str = "beta";
/// OpenAI's range of `beta`: (0, 2].
pub const BETA_RANGE: (f64, f64) = (0.0, 2.0);

/// The type of a hyperparameter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whole numbers.
    Int,
    /// Any finite number.
    Float,
}

/// A hyperparameter a provider accepts: declared (`Param<'static>`, in
/// [`accepted`]), or for `provider = "command"` one the sweep file names,
/// borrowing its name from the file ([`free`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub kind: Kind,
    /// The smallest value allowed.
    pub min: f64,
    /// The largest value allowed.
    pub max: f64,
    /// Whether the value must be above `min` rather than at least `min`.
    pub min_exclusive: bool,
    /// Whether `"auto"` (the provider chooses) is a value.
    pub auto: bool,
    /// Whether the sweep file must give it.
    pub required: bool,
    /// The column header in tables.
    pub short: &'a str,
    /// A value list to show in hints, e.g. `[1, 3, 8]`.
    pub example: &'static str,
    /// The one method it belongs to (`beta`: DPO); `None`: every method.
    pub method: Option<Method>,
}

impl Param<'_> {
    /// Whether a sweep of `method` takes it.
    pub fn applies_to(&self, method: Method) -> bool {
        self.method.is_none_or(|m| m == method)
    }
}

/// The name of the number of epochs, which every provider accepts and
/// successive halving sets rung by rung.
pub const N_EPOCHS: &str = "n_epochs";
/// The name of the training seed, which every provider accepts and
/// replicates vary; never `"auto"` (a run without one takes the sweep's).
pub const SEED: &str = "seed";

const fn param(
    name: &'static str,
    kind: Kind,
    range: (f64, f64),
    short: &'static str,
    example: &'static str,
) -> Param<'static> {
    Param {
        name,
        kind,
        min: range.0,
        max: range.1,
        min_exclusive: false,
        auto: true,
        required: true,
        short,
        example,
        method: None,
    }
}

/// `beta` of DPO sweeps: `auto` or in (0, 2], never required.
const fn beta(example: &'static str) -> Param<'static> {
    Param {
        min_exclusive: true,
        required: false,
        method: Some(Method::Dpo),
        ..param(BETA, Kind::Float, BETA_RANGE, "beta", example)
    }
}

pub const N_EPOCHS_RANGE: (f64, f64) = (1.0, 50.0);
pub const BATCH_SIZE_RANGE: (f64, f64) = (1.0, 256.0);
pub const SEED_RANGE: (f64, f64) = (0.0, 2_147_483_647.0);

/// OpenAI's hyperparameters (`beta` of DPO sweeps only), in the order a grid nests them
/// (first outermost) and random search draws them: the order of ftsweep 0.1,
/// on which run ids depend.
const OPENAI: &[Param<'static>] = &[
    param(N_EPOCHS, Kind::Int, N_EPOCHS_RANGE, "n_epochs", "[1, 3, 8]"),
    Param {
        min_exclusive: true,
        ..param("learning_rate_multiplier", Kind::Float, (0.0, f64::MAX), "lr_mult", "[0.5, 1.0, 2.0]")
    },
    param("batch_size", Kind::Int, BATCH_SIZE_RANGE, "batch", "[1, 3, 8]"),
    beta("[0.1, 0.5, 1.0]"),
    Param { auto: false, required: false, ..param(SEED, Kind::Int, SEED_RANGE, "seed", "[1, 2, 3]") },
];

/// The local trainer's hyperparameters: OpenAI's names, order and ranges
/// (it stands in for OpenAI on a machine without a key, and its run ids
/// depend on the order as OpenAI's do).
const LOCAL: &[Param<'static>] = OPENAI;

/// The names a trainer command always understands; every other name is the
/// sweep's own (any name becomes a `{placeholder}`), declared by the file
/// ([`free`]). No `"auto"`: a trainer command has no default to fall back on.
const COMMAND: &[Param<'static>] = &[
    Param { auto: false, ..param(N_EPOCHS, Kind::Int, N_EPOCHS_RANGE, "n_epochs", "[1, 2, 3]") },
    Param { auto: false, required: false, ..param(SEED, Kind::Int, SEED_RANGE, "seed", "[1, 2, 3]") },
];

/// Together AI's knobs, by the names of its create request where they are
/// top-level and by their own where they sit in an object (`lora_*` go into
/// `training_type`): see [`request_field`]. `auto` omits the field (the
/// server's default; for `batch_size` that is `"max"`). `beta` (DPO sweeps
/// only) is named as OpenAI names it and goes into `training_method` as
/// `dpo_beta`. The order is Together's
/// own (run ids depend on it); only `n_epochs` must be written.
const TOGETHER: &[Param<'static>] = &[
    Param { auto: false, ..param(N_EPOCHS, Kind::Int, N_EPOCHS_RANGE, "n_epochs", "[1, 3]") },
    Param {
        min_exclusive: true,
        required: false,
        ..param("learning_rate", Kind::Float, (0.0, 1.0), "learning_rate", "[0.00001, 0.0002]")
    },
    Param { required: false, ..param("batch_size", Kind::Int, (1.0, 1024.0), "batch_size", "[8, 16]") },
    Param { required: false, ..param("lora_r", Kind::Int, (1.0, 1024.0), "lora_r", "[8, 32]") },
    Param { required: false, ..param("lora_alpha", Kind::Int, (1.0, 4096.0), "lora_alpha", "[16, 64]") },
    Param { required: false, ..param("lora_dropout", Kind::Float, (0.0, 0.999), "lora_dropout", "[0.0, 0.05]") },
    Param { required: false, ..param("warmup_ratio", Kind::Float, (0.0, 1.0), "warmup_ratio", "[0.0, 0.1]") },
    Param { required: false, ..param("max_grad_norm", Kind::Float, (0.0, 1000.0), "max_grad_norm", "[0.5, 1.0]") },
    Param { required: false, ..param("weight_decay", Kind::Float, (0.0, 10.0), "weight_decay", "[0.0, 0.01]") },
    Param { required: false, ..param("n_checkpoints", Kind::Int, (1.0, 100.0), "n_checkpoints", "[1, 3]") },
    Param { required: false, ..param("n_evals", Kind::Int, (0.0, 100.0), "n_evals", "[0, 4]") },
    // Sent as `training_method.dpo_beta` (Together's default 0.1; its guide suggests 0.05 to 0.9).
    beta("[0.1, 0.5]"),
    Param { auto: false, required: false, ..param(SEED, Kind::Int, SEED_RANGE, "seed", "[1, 2, 3]") },
];

/// Azure OpenAI takes OpenAI's job shapes and names.
const AZURE: &[Param<'static>] = OPENAI;

/// The field of the create request a hyperparameter becomes, for `plan` and
/// the README's table; `None` when `provider` does not take the name (a
/// trainer command gets every name as a `{placeholder}` of its command).
pub fn request_field(provider: ProviderKind, name: &str) -> Option<String> {
    let method = if name == BETA { Method::Dpo } else { Method::Sft };
    request_field_for(provider, method, name)
}

/// [`request_field`] in a sweep of `method`: OpenAI's hyperparameters sit
/// under `method.supervised` or `method.dpo`.
pub fn request_field_for(provider: ProviderKind, method: Method, name: &str) -> Option<String> {
    let declared = accepted(provider).iter().any(|p| p.name == name && p.applies_to(method));
    if !declared && !takes_free_names(provider) {
        return None;
    }
    let object = match method {
        Method::Sft => "supervised",
        Method::Dpo => "dpo",
    };
    Some(match (provider, name) {
        (ProviderKind::Local, BETA) => "trainer beta (no preference objective: ignored)".into(),
        (ProviderKind::Local, n) => format!("trainer {n}"),
        (ProviderKind::OpenAi | ProviderKind::Azure, SEED) => "seed".into(),
        (ProviderKind::OpenAi | ProviderKind::Azure, n) => format!("method.{object}.hyperparameters.{n}"),
        (ProviderKind::Together, SEED) => "random_seed".into(),
        (ProviderKind::Together, BETA) => "training_method.dpo_beta".into(),
        (ProviderKind::Together, n) if n.starts_with("lora_") => format!("training_type.{n}"),
        (ProviderKind::Together, n) => n.into(),
        (ProviderKind::Command, n) => format!("{{{n}}}"),
    })
}

/// The names `provider` accepts, in the order a grid nests them and random
/// search draws them.
pub fn accepted(provider: ProviderKind) -> &'static [Param<'static>] {
    match provider {
        ProviderKind::Local => LOCAL,
        ProviderKind::OpenAi => OPENAI,
        ProviderKind::Command => COMMAND,
        ProviderKind::Together => TOGETHER,
        ProviderKind::Azure => AZURE,
    }
}

/// Whether `provider` takes names besides those it declares: the trainer
/// command's, each a `{placeholder}` of its command.
pub fn takes_free_names(provider: ProviderKind) -> bool {
    provider == ProviderKind::Command
}

/// The placeholders ftsweep fills in for a trainer command itself, besides
/// the hyperparameters: no hyperparameter may take one of these names
/// (`seed` is a declared hyperparameter and a placeholder both).
pub const RESERVED: &[&str] = &[
    "base_model",
    "training_file",
    "validation_file",
    "output_dir",
    "run_id",
    "seed",
    "init_from",
    "ftsweep",
    "config",
];

/// Why `name` cannot be a free hyperparameter name, if it cannot: it must be
/// `[a-z_][a-z0-9_]*` (a `{placeholder}` of the command, and the same name
/// in every table and JSON key), and not one of [`RESERVED`].
pub fn free_name_problem(name: &str) -> Option<String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Some(format!(
            "`{name}` cannot be a hyperparameter name: each becomes a `{{placeholder}}` of the trainer command"
        ));
    }
    RESERVED.contains(&name).then(|| format!("`{name}` is a placeholder ftsweep fills in itself, not a hyperparameter"))
}

/// The declaration of a free hyperparameter `name` (see
/// [`free_name_problem`]) of `kind`: any finite value, never `"auto"`,
/// required only in the sense that it is written.
pub fn free(name: &str, kind: Kind) -> Param<'_> {
    Param {
        name,
        kind,
        min: f64::MIN,
        max: f64::MAX,
        min_exclusive: false,
        auto: false,
        required: false,
        short: name,
        example: match kind {
            Kind::Int => "[8, 16]",
            Kind::Float => "[0.0001, 0.0002]",
        },
        method: None,
    }
}

/// The column header of `name`: its declared short form, else the name.
pub fn short(name: &str) -> &str {
    PROVIDERS.into_iter().flat_map(accepted).find(|p| p.name == name).map_or(name, |p| p.short)
}

/// The values a hyperparameter may take.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// An explicit list, in the order written; `None` is `"auto"`: the
    /// provider chooses.
    Values(Vec<Option<f64>>),
    /// Uniform between the bounds (integers for integer parameters).
    Uniform(f64, f64),
    /// Log-uniform between the bounds, both > 0.
    LogUniform(f64, f64),
}

/// One hyperparameter of a sweep and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub kind: Kind,
    pub domain: Domain,
    /// Whether the sweep file gives it (else it takes its default: `auto`,
    /// or the sweep's seed).
    pub written: bool,
}

/// A sweep's hyperparameters: every name its provider accepts, in the
/// provider's order ([`accepted`]), each with the values the file gives or
/// its default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hyperparameters(pub Vec<Axis>);

impl Hyperparameters {
    /// The axis of `name`, if the provider accepts it.
    pub fn get(&self, name: &str) -> Option<&Axis> {
        self.0.iter().find(|a| a.name == name)
    }

    /// The values of `name`; `auto` alone when the provider does not accept it.
    pub fn domain(&self, name: &str) -> &Domain {
        static AUTO: std::sync::LazyLock<Domain> = std::sync::LazyLock::new(|| Domain::Values(vec![None]));
        self.get(name).map_or(&AUTO, |a| &a.domain)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Axis> {
        self.0.iter()
    }

    /// The names the file gives, in the provider's order.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter(|a| a.written).map(|a| a.name.as_str())
    }
}

/// A seeded draw from a domain: log-uniform for `LogUniform`, integers for
/// integer axes, floats rounded to 3 significant digits (short run ids).
pub fn draw(rng: &mut rand_chacha::ChaCha8Rng, d: &Domain, integer: bool) -> Option<f64> {
    use rand::Rng;
    let x = match d {
        Domain::Values(v) => return v[rng.random_range(0..v.len())],
        Domain::Uniform(lo, hi) if integer => rng.random_range(*lo as i64..=*hi as i64) as f64,
        Domain::Uniform(lo, hi) => rng.random_range(*lo..*hi),
        Domain::LogUniform(lo, hi) => (rng.random_range(lo.ln()..hi.ln())).exp(),
    };
    Some(if integer { x.round() } else { round_significant(x, 3) })
}

/// `x` to `digits` significant digits (drawn and proposed floats, so run ids stay short).
pub fn round_significant(x: f64, digits: usize) -> f64 {
    // Scientific notation with `digits - 1` decimals rounds to `digits`
    // significant digits; parsing it back gives the nearest f64, which prints
    // as the short decimal.
    format!("{:.*e}", digits.saturating_sub(1), x).parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_declares_its_names_once_with_examples_in_range() {
        for provider in PROVIDERS {
            let params = accepted(provider);
            let names: Vec<&str> = params.iter().map(|p| p.name).collect();
            // Successive halving and replicates set these two.
            assert!(names.contains(&N_EPOCHS) && names.contains(&SEED), "{names:?}");
            for (i, p) in params.iter().enumerate() {
                assert!(!names[..i].contains(&p.name), "{} is declared twice", p.name);
                assert!(p.min < p.max, "{}", p.name);
                let example: toml::Table = toml::from_str(&format!("v = {}", p.example)).unwrap();
                for v in example["v"].as_array().unwrap() {
                    let x = v.as_float().or(v.as_integer().map(|i| i as f64)).unwrap();
                    let above = if p.min_exclusive { x > p.min } else { x >= p.min };
                    assert!(above && x <= p.max, "{}: {x}", p.name);
                    assert!(p.kind == Kind::Float || x.fract() == 0.0, "{}: {x}", p.name);
                }
            }
        }
        // The order of ftsweep 0.1, on which run ids depend.
        let openai: Vec<&str> = accepted(ProviderKind::OpenAi).iter().map(|p| p.name).collect();
        assert_eq!(openai, ["n_epochs", "learning_rate_multiplier", "batch_size", "beta", "seed"]);
        assert_eq!(
            request_field_for(ProviderKind::OpenAi, Method::Dpo, "n_epochs").unwrap(),
            "method.dpo.hyperparameters.n_epochs"
        );
        assert_eq!(request_field(ProviderKind::Azure, BETA).unwrap(), "method.dpo.hyperparameters.beta");
        assert_eq!(request_field_for(ProviderKind::OpenAi, Method::Sft, BETA), None);
        assert_eq!(request_field(ProviderKind::Together, BETA).unwrap(), "training_method.dpo_beta");
    }
}
