//! Simulator configuration: which bearer tokens belong to which owner, lifecycle timings and the
//! rate limit (`Settings`), and the faults to start with. Plain data and parsing; no HTTP, no clock.

use serde::{Deserialize, Serialize};

use crate::faults::Faults;

/// Everything a simulator starts with. `Default` has no tokens, the test timings of
/// [`Settings::default`] and no faults.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Bearer token → owner id. A token not listed here gets 401 `invalid_token`.
    pub tokens: Vec<(String, String)>,
    /// Lifecycle timings, rate limit and trial length; changeable at run time through
    /// `PUT /_sim/settings`.
    pub settings: Settings,
    /// Faults active from the start; replaceable at run time through `PUT /_sim/faults`.
    pub faults: Faults,
}

impl SimConfig {
    /// Adds a bearer token that authenticates as `owner`.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>, owner: impl Into<String>) -> Self {
        self.tokens.push((token.into(), owner.into()));
        self
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Replaces the faults.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Lifecycle timings (milliseconds), the rate limit per token and endpoint, and the trial
/// length. JSON names are the camelCase ones of `PUT /_sim/settings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Time a new instance spends in `pending`.
    pub pending_ms: u64,
    /// Time a new instance then spends in `provisioning` before `running`.
    pub provisioning_ms: u64,
    /// Time from a stop call until `stopped`.
    pub stop_ms: u64,
    /// Time a started instance spends in `provisioning` before `running`.
    pub start_ms: u64,
    /// Time a restarted instance spends in `provisioning` before `running`.
    pub restart_ms: u64,
    /// Time from a destroy call until `terminated`.
    pub destroy_ms: u64,
    /// How long a `terminated` instance stays visible to get/list before it answers 404.
    pub terminated_retention_ms: u64,
    /// Requests per second per token and endpoint; `0` turns the rate limit off.
    pub rate_limit_per_second: f64,
    /// Bucket size of the rate limit (at least 1 is used).
    pub rate_limit_burst: u32,
    /// Lifetime of a trial instance: its `expiresAt` is this long after its deploy.
    pub trial_ms: u64,
}

/// Default lifetime of a trial instance: 72 hours.
pub const DEFAULT_TRIAL_MS: u64 = 72 * 60 * 60 * 1000;

impl Default for Settings {
    /// Short timings that keep tests fast while every transition stays observable.
    fn default() -> Self {
        Self {
            pending_ms: 100,
            provisioning_ms: 300,
            stop_ms: 200,
            start_ms: 200,
            restart_ms: 200,
            destroy_ms: 200,
            terminated_retention_ms: 2000,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 10,
            trial_ms: DEFAULT_TRIAL_MS,
        }
    }
}

/// A partial update of [`Settings`]: absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    pub pending_ms: Option<u64>,
    pub provisioning_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    pub start_ms: Option<u64>,
    pub restart_ms: Option<u64>,
    pub destroy_ms: Option<u64>,
    pub terminated_retention_ms: Option<u64>,
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<u32>,
    pub trial_ms: Option<u64>,
}

impl SettingsPatch {
    /// Returns `settings` with this patch applied, or why the patch is invalid.
    pub fn applied_to(&self, settings: &Settings) -> Result<Settings, String> {
        if let Some(rate) = self.rate_limit_per_second
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err("rateLimitPerSecond must be a finite number >= 0".to_owned());
        }
        let s = settings.clone();
        Ok(Settings {
            pending_ms: self.pending_ms.unwrap_or(s.pending_ms),
            provisioning_ms: self.provisioning_ms.unwrap_or(s.provisioning_ms),
            stop_ms: self.stop_ms.unwrap_or(s.stop_ms),
            start_ms: self.start_ms.unwrap_or(s.start_ms),
            restart_ms: self.restart_ms.unwrap_or(s.restart_ms),
            destroy_ms: self.destroy_ms.unwrap_or(s.destroy_ms),
            terminated_retention_ms: self
                .terminated_retention_ms
                .unwrap_or(s.terminated_retention_ms),
            rate_limit_per_second: self
                .rate_limit_per_second
                .unwrap_or(s.rate_limit_per_second),
            rate_limit_burst: self.rate_limit_burst.unwrap_or(s.rate_limit_burst),
            trial_ms: self.trial_ms.unwrap_or(s.trial_ms),
        })
    }
}

/// Parses one `TOKEN=OWNER` pair (surrounding blanks trimmed).
pub fn parse_token_pair(text: &str) -> Result<(String, String), String> {
    let (token, owner) = text
        .split_once('=')
        .ok_or_else(|| "expected TOKEN=OWNER".to_owned())?;
    let (token, owner) = (token.trim(), owner.trim());
    if token.is_empty() || owner.is_empty() {
        return Err("expected TOKEN=OWNER with both sides non-empty".to_owned());
    }
    Ok((token.to_owned(), owner.to_owned()))
}

/// Parses a tokens file: one `TOKEN=OWNER` a line; blank lines and lines starting with `#` are
/// skipped. Errors name the line number.
pub fn parse_tokens_file(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| parse_token_pair(line).map_err(|e| format!("line {n}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_skips_comments_and_blank_lines() {
        let parsed = parse_tokens_file("# tokens\n\noag_a = alice\noag_b=bob\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("oag_a".to_owned(), "alice".to_owned()),
                ("oag_b".to_owned(), "bob".to_owned())
            ]
        );
    }

    #[test]
    fn tokens_file_error_names_the_line() {
        let err = parse_tokens_file("oag_a=alice\nbroken\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_token_pair("=owner").is_err());
    }

    #[test]
    fn settings_patch_changes_only_given_fields() {
        let patch: SettingsPatch =
            serde_json::from_str(r#"{"pendingMs":5,"rateLimitPerSecond":2.5}"#).unwrap();
        let updated = patch.applied_to(&Settings::default()).unwrap();
        assert_eq!(updated.pending_ms, 5);
        assert_eq!(updated.rate_limit_per_second, 2.5);
        assert_eq!(updated.provisioning_ms, Settings::default().provisioning_ms);
    }

    #[test]
    fn settings_patch_rejects_unknown_fields_and_negative_rates() {
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"pendingMillis":5}"#).is_err());
        let patch: SettingsPatch = serde_json::from_str(r#"{"rateLimitPerSecond":-1}"#).unwrap();
        assert!(patch.applied_to(&Settings::default()).is_err());
    }
}
