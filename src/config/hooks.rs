//! `[hooks]`: the Sentinel push hook (`POST /hooks/sentinel`), off by default. A hook is
//! only a hint to reconcile one incident now, so what is configured here is how a
//! request proves it comes from the operator's Logic App and how much of it is taken.
//!
//! The secret is never in the file (the schema refuses unknown keys such as `secret`):
//! it comes from the file `secret_file` names, else from the variable `secret_env`
//! names. Resolving it is separate from loading, as for sign-in credentials, and its
//! errors name the variable or file, never a value.

use super::{ConfigError, Env};
use crate::client::Secret;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// How a hook request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookAuth {
    /// The shared secret in a header, compared in constant time: what a Logic App's
    /// HTTP action can send.
    Secret,
    /// HMAC-SHA256 over `timestamp + "." + body`, with a timestamp header: a captured
    /// request reveals no secret, and is refused when replayed or stale.
    Hmac,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    pub enabled: bool,
    pub auth: HookAuth,
    /// The name of the variable holding the secret (not the secret).
    pub secret_env: String,
    /// Wins over `secret_env` when set.
    pub secret_file: Option<PathBuf>,
    /// `None`: the hook is served on `server.listen` beside `/metrics`; set, on its own
    /// listener serving nothing else (what an ingress should point at).
    pub listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    /// Authenticated requests taken per minute (a token bucket holding as many).
    pub requests_per_minute: u32,
    /// Incidents waiting for their reconcile at most; a hook for one already waiting is
    /// coalesced into its entry.
    pub queue_capacity: usize,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            enabled: false,
            // What a Logic App can send without a code step.
            auth: HookAuth::Secret,
            secret_env: "RULEBRIDGE_HOOK_SECRET".into(),
            secret_file: None,
            listen: None,
            // A whole Sentinel incident trigger body with a few alerts and entities fits;
            // the minimal body the README recommends is under 200 bytes.
            max_body_bytes: 64 * 1024,
            // One analyst edit a second with room for bursts; each hint costs two reads.
            requests_per_minute: 120,
            queue_capacity: 1000,
        }
    }
}

impl HooksConfig {
    /// The secret and where it came from (for the one log line), if hooks are enabled;
    /// `label` names the configuration in errors. Files are trimmed.
    pub fn secret_in(
        &self,
        env: &dyn Env,
        label: &str,
    ) -> Result<Option<(Secret, String)>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let error = |message: String| ConfigError::Hooks {
            path: label.to_string(),
            message,
        };
        if let Some(file) = &self.secret_file {
            // Only the io error is shown: it never carries the contents.
            let text = std::fs::read_to_string(file).map_err(|e| {
                error(format!(
                    "cannot read hooks.secret_file {}: {e}",
                    file.display()
                ))
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(error(format!(
                    "hooks.secret_file {} is empty",
                    file.display()
                )));
            }
            return Ok(Some((
                Secret::new(secret),
                format!("hooks.secret_file {}", file.display()),
            )));
        }
        match env.var(&self.secret_env) {
            Some(secret) => Ok(Some((Secret::new(secret.trim()), self.secret_env.clone()))),
            None => Err(error(format!(
                "hooks are enabled but have no secret: the environment variable {} is not \
                 set (hooks.secret_env) and hooks.secret_file is not set",
                self.secret_env
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    const WORKSPACE: &str =
        "[sentinel]\nincidents_url = \"https://arm/x/incidents?api-version=1\"\n";

    fn hooks(text: &str) -> Result<HooksConfig, String> {
        Config::parse(&format!("{WORKSPACE}[hooks]\n{text}"), "rb.toml")
            .map(|c| c.hooks)
            .map_err(|e| e.to_string())
    }

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_by_default_and_then_needs_no_secret() {
        let c = hooks("").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.auth, HookAuth::Secret);
        assert!(c.secret_in(&env(&[]), "rb.toml").unwrap().is_none());
    }

    #[test]
    fn a_missing_secret_names_the_variable_and_a_secret_never_appears() {
        let c = hooks("enabled = true\nsecret_env = \"RB_HOOK_NEVER_SET\"\n").unwrap();
        let e = c.secret_in(&env(&[]), "rb.toml").unwrap_err().to_string();
        assert!(
            e.starts_with("rb.toml: hooks: hooks are enabled but have no secret: the environment variable RB_HOOK_NEVER_SET"),
            "{e}"
        );
        let (secret, from) = c
            .secret_in(&env(&[("RB_HOOK_NEVER_SET", "hook-s3cret-1\n")]), "rb.toml")
            .unwrap()
            .unwrap();
        assert_eq!(
            (secret.expose(), from.as_str()),
            ("hook-s3cret-1", "RB_HOOK_NEVER_SET")
        );
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        // Set but blank is no secret (`Env` reads blank as unset): it would admit anyone
        // sending an empty header.
        let e = c
            .secret_in(&env(&[("RB_HOOK_NEVER_SET", " \n")]), "rb.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("RB_HOOK_NEVER_SET is not set"), "{e}");
    }

    #[test]
    fn the_file_wins_and_an_empty_or_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hook-secret");
        std::fs::write(&file, "from-file-7\n").unwrap();
        let c = hooks(&format!(
            "enabled = true\nsecret_file = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        let vars = env(&[("RULEBRIDGE_HOOK_SECRET", "from-env")]);
        let (secret, _) = c.secret_in(&vars, "rb.toml").unwrap().unwrap();
        assert_eq!(secret.expose(), "from-file-7");
        std::fs::write(&file, " \n").unwrap();
        let e = c.secret_in(&vars, "rb.toml").unwrap_err().to_string();
        assert!(
            e.contains("hooks.secret_file") && e.contains("is empty"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        let e = c.secret_in(&vars, "rb.toml").unwrap_err().to_string();
        assert!(e.contains("cannot read hooks.secret_file"), "{e}");
    }

    #[test]
    fn a_secret_in_the_file_and_bad_values_are_refused() {
        let e = hooks("enabled = true\nsecret = \"hunter2-hook\"\n").unwrap_err();
        assert!(e.contains("/hooks") && e.contains("secret"), "{e}");
        assert!(hooks("auth = \"basic\"\n")
            .unwrap_err()
            .contains("/hooks/auth"));
        assert!(hooks("max_body_bytes = 10\n")
            .unwrap_err()
            .contains("/hooks/max_body_bytes"));
        assert!(hooks("requests_per_minute = 0\n")
            .unwrap_err()
            .contains("/hooks/requests_per_minute"));
        let e = hooks("listen = \"localhost:1\"\n").unwrap_err();
        assert!(
            e.contains("/hooks/listen") && e.contains("not a socket address"),
            "{e}"
        );
        let c = hooks("auth = \"hmac\"\nlisten = \"127.0.0.1:9465\"\n").unwrap();
        assert_eq!(
            (c.auth, c.listen.map(|l| l.port())),
            (HookAuth::Hmac, Some(9465))
        );
    }
}
