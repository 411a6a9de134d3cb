//! The search space: a hyperparameter name the provider does not declare is
//! refused before anything is written, with the names it accepts.

use crate::util::{Workspace, sweep_toml};

#[test]
fn a_name_the_provider_does_not_accept_is_refused_with_the_accepted_names() {
    let hp = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = [8]\nlora_r = [8]";
    let local = sweep_toml("space", hp);
    let openai = local
        .replace("provider = \"local\"", "provider = \"openai\"")
        .replace("local/ngram", "gpt-4.1-mini-2025-04-14");
    for (provider, text) in [("openai", openai), ("local", local)] {
        let ws = Workspace::new();
        let path = ws.write("sweep.toml", &text);
        let run = ws.cmd().arg("plan").arg(&path).env_remove("OPENAI_API_KEY").env_remove("OPENAI_BASE_URL").output();
        let run = run.expect("running ftsweep");
        let (code, out, err) =
            (run.status.code(), String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert_eq!(code, Some(2), "{provider}: exit code 2:\n{err}");
        assert!(out.is_empty(), "{provider}: nothing on stdout: {out}");
        assert!(
            err.contains(&format!(
                "sweep.toml:15: `hyperparameters.lora_r`: the {provider} provider does not accept `lora_r`"
            )),
            "{provider}: the file, line, key and name:\n{err}"
        );
        assert!(
            err.contains(&format!(
                "hint: remove `lora_r`; the {provider} provider accepts n_epochs, learning_rate_multiplier, batch_size, seed"
            )),
            "{provider}: the accepted names:\n{err}"
        );
        assert!(!ws.db().exists(), "{provider}: no database written");
    }
}
