//! Bearer tokens: each named, with one role, its value read from the environment variable
//! the config names, compared in constant time. A token's value never reaches a log, the
//! trail or an answer; its name is the actor of what it changes.

use axum::http::HeaderMap;
use lethe_core::config::{ApiConfig, Role};
use lethe_ops::{Error, Result};
use subtle::ConstantTimeEq;

use super::ApiError;

/// A configured token, with its value.
pub struct Token {
    pub name: String,
    pub role: Role,
    value: Vec<u8>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name: the actor of what it changes.
    pub name: String,
}

/// Reads every token's value from its variable: one unset or empty refuses the start,
/// naming the variable (never a value).
pub fn load_tokens(api: &ApiConfig) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    for t in &api.tokens {
        let value = std::env::var(&t.token_env).unwrap_or_default();
        if value.trim().is_empty() {
            return Err(Error::usage(format!(
                "[[api.tokens]] {} (line {}): its token_env {} is not set (or empty): set it to the token's value",
                t.name, t.line, t.token_env
            )));
        }
        // Two tokens with one value: which role it has would be a guess.
        if let Some(other) = out
            .iter()
            .find(|o: &&Token| bool::from(o.value.as_slice().ct_eq(value.trim().as_bytes())))
        {
            return Err(Error::usage(format!(
                "[[api.tokens]] {} (line {}) has the same value as {}: give each token its own",
                t.name, t.line, other.name
            )));
        }
        out.push(Token {
            name: t.name.clone(),
            role: t.role,
            value: value.trim().as_bytes().to_vec(),
        });
    }
    Ok(out)
}

/// The caller, when its token allows `needed`: 401 without a valid token, 403 when the
/// token's role does not allow it. With no token configured (the daemon then listens on
/// loopback only), anyone may read what a viewer may, and nobody may change anything.
pub fn require(tokens: &[Token], headers: &HeaderMap, needed: Role) -> Result<Caller, ApiError> {
    if tokens.is_empty() {
        if needed == Role::Viewer {
            return Ok(Caller {
                name: "anonymous".into(),
            });
        }
        return Err(ApiError::unauthorized(
            "no [[api.tokens]] is configured, so nothing can be changed through the API: configure a token with the role this needs",
        ));
    }
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized(
            "this endpoint needs a bearer token: send Authorization: Bearer <token>",
        ));
    };
    // Every token is compared, whichever matches: the time taken says nothing of which.
    let mut found: Option<&Token> = None;
    for t in tokens {
        if bool::from(t.value.as_slice().ct_eq(presented.as_bytes())) {
            found = Some(t);
        }
    }
    let Some(t) = found else {
        return Err(ApiError::unauthorized("the bearer token is not valid"));
    };
    if !t.role.allows(needed) {
        return Err(ApiError::forbidden(format!(
            "token {} has role {}, and this needs role {} (or admin)",
            t.name,
            t.role.name(),
            needed.name()
        )));
    }
    Ok(Caller {
        name: t.name.clone(),
    })
}
