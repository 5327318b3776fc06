//! The BeeOS bearer credential (`oag_…` API key or user JWT) and its fingerprint.
//!
//! The token never leaves this type except as the `Authorization` header value (marked sensitive):
//! `Debug` and `Display` show only the token's kind and a SHA-256 fingerprint prefix, which names
//! a credential in logs and keys its rate limit without revealing any key material.

use std::fmt;
use std::sync::Arc;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

use super::error::Error;

/// A BeeOS bearer token. Cheap to clone; the token is zeroized when the last clone drops.
#[derive(Clone)]
pub struct Credential {
    token: Arc<SecretString>,
    fingerprint: Fingerprint,
}

impl Credential {
    /// Wraps a token as read from a Secret or the environment.
    ///
    /// Surrounding whitespace is trimmed (Secret values often end in a newline). Fails with
    /// [`Error::Config`] when the token is empty or not valid in an HTTP header; the error never
    /// quotes the token.
    pub fn new(token: impl Into<String>) -> Result<Self, Error> {
        let token: String = token.into();
        let trimmed = token.trim();
        if trimmed.is_empty() {
            return Err(Error::Config {
                reason: "the BeeOS credential is empty".to_owned(),
            });
        }
        if !trimmed.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(Error::Config {
                reason: "the BeeOS credential contains characters not allowed in a bearer token"
                    .to_owned(),
            });
        }
        let fingerprint = Fingerprint::of(trimmed);
        Ok(Self {
            token: Arc::new(SecretString::from(trimmed)),
            fingerprint,
        })
    }

    /// The credential's fingerprint: stable, safe to log, and the key of its rate limit.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The token's kind, safe to log: `oag_` for API keys, `jwt` for user JWTs, else `bearer`.
    pub fn kind(&self) -> &'static str {
        let token = self.token.expose_secret();
        if token.starts_with("oag_") {
            "oag_"
        } else if token.starts_with("eyJ") && token.matches('.').count() == 2 {
            "jwt"
        } else {
            "bearer"
        }
    }

    /// The `Authorization` header value, marked sensitive so HTTP layers never log it.
    pub(crate) fn authorization(&self) -> Result<HeaderValue, Error> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| Error::Config {
                reason: "the BeeOS credential is not a valid header value".to_owned(),
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Replaces every occurrence of the token in `text`, for server-provided text that ends up in
    /// errors (a misbehaving proxy may echo request headers).
    pub(crate) fn scrub(&self, text: &str) -> String {
        text.replace(self.token.expose_secret(), "<redacted>")
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            "oag_" => write!(f, "oag_…(redacted, {})", self.fingerprint),
            kind => write!(f, "{kind}(redacted, {})", self.fingerprint),
        }
    }
}

/// SHA-256 of a token. Shown as `sha256:` and the first 12 hex digits; compares on all 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        // Six bytes tell credentials apart in logs; the full hash stays internal.
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "oag_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn debug_and_display_never_show_the_token() {
        let credential = Credential::new(TOKEN).unwrap();
        let shown = format!("{credential:?} {credential:#?} {credential}");
        assert!(!shown.contains(TOKEN), "{shown}");
        // Not even the random part of it.
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("sha256:"), "{shown}");
        assert_eq!(credential.kind(), "oag_");
        assert!(
            credential
                .to_string()
                .starts_with("oag_…(redacted, sha256:")
        );
    }

    #[test]
    fn the_authorization_header_is_sensitive_and_carries_the_token() {
        let credential = Credential::new(TOKEN).unwrap();
        let header = credential.authorization().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(!format!("{header:?}").contains(TOKEN));
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let with_newline = Credential::new(format!("{TOKEN}\n")).unwrap();
        let plain = Credential::new(TOKEN).unwrap();
        assert_eq!(with_newline.fingerprint(), plain.fingerprint());
    }

    #[test]
    fn empty_or_malformed_tokens_are_rejected_without_quoting_them() {
        assert!(matches!(Credential::new("  \n"), Err(Error::Config { .. })));
        let err = Credential::new("oag_secret with space").unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(!format!("{err} {err:?}").contains("secret"));
    }

    #[test]
    fn fingerprints_tell_tokens_apart_and_are_stable() {
        let a = Credential::new("oag_a").unwrap();
        let b = Credential::new("oag_b").unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            Credential::new("oag_a").unwrap().fingerprint()
        );
        // SHA-256("oag_a"), first six bytes.
        assert_eq!(a.fingerprint().to_string().len(), "sha256:".len() + 12);
    }

    #[test]
    fn kinds_are_recognised() {
        assert_eq!(
            Credential::new("eyJhbGciOi.eyJzdWIi.sig").unwrap().kind(),
            "jwt"
        );
        assert_eq!(Credential::new("something-else").unwrap().kind(), "bearer");
    }

    #[test]
    fn scrub_removes_the_token_from_server_text() {
        let credential = Credential::new(TOKEN).unwrap();
        let echoed = format!("bad header: Bearer {TOKEN}");
        assert_eq!(credential.scrub(&echoed), "bad header: Bearer <redacted>");
    }
}
