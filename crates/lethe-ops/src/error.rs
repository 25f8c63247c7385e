//! What an operation's failure means to its caller: whether anything was touched, and what
//! to do about it. The engine, the state and the connectors report with `anyhow` (a context
//! chain); an operation returns an [`Error`] sorted from it, so that a front end branches on
//! the kind rather than on a message.

use std::fmt;

pub use crate::state::TrailBroken;
pub use crate::util::{ConfigProblems, Conflict, NotFound, UsageError};

/// Why an operation failed. The first four are refusals: the operation stopped before it
/// touched anything, and the same call fails the same way until the caller changes it. The
/// others happened while it ran.
///
/// The variants that hold an [`anyhow::Error`] are transparent: they display as it does
/// (`{}` the outermost message, `{:#}` the whole chain), and their `source` is its source.
#[derive(Debug)]
pub enum Error {
    /// Bad usage: an option or a value that cannot be used as given.
    Usage(UsageError),
    /// A config that does not parse, validate or fit: each problem with its key and line.
    Config(ConfigProblems),
    /// A name or id that names nothing.
    NotFound(NotFound),
    /// A change the registers refuse as they stand.
    Conflict(Conflict),
    /// The trail does not verify where it must be extended (cut, rewritten, unsealed): no
    /// writing operation runs until it is repaired. Holds the chain, which has a
    /// [`TrailBroken`] in it.
    TrailBroken(anyhow::Error),
    /// A target could not be opened or read outside a sweep (a sweep reports a target that
    /// fails in its report, not as an error).
    TargetFailed {
        target: String,
        error: anyhow::Error,
    },
    /// Anything else: the state's database, the file system, an output that closed.
    Other(anyhow::Error),
}

/// An operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage(UsageError(message.into()))
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(NotFound(message.into()))
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict(Conflict(message.into()))
    }

    /// A failure reading target `name`: a refusal in it (a missing database, a bad URL)
    /// stays a refusal, anything else is [`Error::TargetFailed`].
    pub fn target(name: &str, error: anyhow::Error) -> Error {
        match Error::from(error) {
            Error::Other(error) => Error::TargetFailed {
                target: name.to_string(),
                error,
            },
            other => other,
        }
    }

    /// Whether the operation stopped before touching anything because of what it was asked
    /// (bad usage or config, a name that names nothing, a change the registers refuse).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Usage(_) | Error::Config(_) | Error::NotFound(_) | Error::Conflict(_)
        )
    }

    /// The context chain behind a failure that happened while running, if that is what
    /// this is.
    pub fn chain_error(&self) -> Option<&anyhow::Error> {
        match self {
            Error::TrailBroken(e) | Error::TargetFailed { error: e, .. } | Error::Other(e) => {
                Some(e)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(e) => e.fmt(f),
            Error::Config(e) => e.fmt(f),
            Error::NotFound(e) => e.fmt(f),
            Error::Conflict(e) => e.fmt(f),
            Error::TrailBroken(e) | Error::TargetFailed { error: e, .. } | Error::Other(e) => {
                if f.alternate() {
                    write!(f, "{e:#}")
                } else {
                    write!(f, "{e}")
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.chain_error() {
            Some(e) => {
                let top: &(dyn std::error::Error + 'static) = e.as_ref();
                top.source()
            }
            None => None,
        }
    }
}

/// Sorts a chain by what it holds, in the order the command line has always looked: a
/// refused config, bad usage, a missing name, a refused change, a broken trail. A refusal
/// is taken out of any context around it (its own message says it all); anything else keeps
/// its chain. An [`Error`] passed through `anyhow` (out of a closure) comes back as it was.
impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        let top_is_ours = e
            .chain()
            .next()
            .is_some_and(|c| c.downcast_ref::<Error>().is_some());
        match e.downcast_ref::<Error>() {
            Some(inner) if top_is_ours || inner.is_refusal() => {
                return match e.downcast::<Error>() {
                    Ok(inner) => inner,
                    Err(e) => Error::Other(e),
                };
            }
            // Under context: the chain is kept whole, and says what it holds.
            Some(Error::TrailBroken(_)) => return Error::TrailBroken(e),
            Some(Error::TargetFailed { target, .. }) => {
                return Error::TargetFailed {
                    target: target.clone(),
                    error: e,
                };
            }
            Some(_) => return Error::Other(e),
            None => {}
        }
        let e = match e.downcast::<ConfigProblems>() {
            Ok(c) => return Error::Config(c),
            Err(e) => e,
        };
        let e = match e.downcast::<UsageError>() {
            Ok(u) => return Error::Usage(u),
            Err(e) => e,
        };
        let e = match e.downcast::<NotFound>() {
            Ok(n) => return Error::NotFound(n),
            Err(e) => e,
        };
        let e = match e.downcast::<Conflict>() {
            Ok(c) => return Error::Conflict(c),
            Err(e) => e,
        };
        if e.downcast_ref::<TrailBroken>().is_some() {
            return Error::TrailBroken(e);
        }
        Error::Other(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Error {
        Error::Usage(e)
    }
}

impl From<ConfigProblems> for Error {
    fn from(e: ConfigProblems) -> Error {
        Error::Config(e)
    }
}

impl From<NotFound> for Error {
    fn from(e: NotFound) -> Error {
        Error::NotFound(e)
    }
}

impl From<Conflict> for Error {
    fn from(e: Conflict) -> Error {
        Error::Conflict(e)
    }
}

impl From<TrailBroken> for Error {
    fn from(e: TrailBroken) -> Error {
        Error::TrailBroken(e.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Other(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Other(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_found_under_context_and_shown_alone() {
        let e = Error::from(anyhow::Error::new(UsageError("bad".into())).context("while doing it"));
        assert!(matches!(e, Error::Usage(_)));
        assert_eq!(format!("{e:#}"), "bad");
    }

    #[test]
    fn a_failure_keeps_its_chain() {
        let e = Error::from(
            anyhow::Error::new(std::io::Error::other("disk")).context("Failed to write x"),
        );
        assert!(matches!(e, Error::Other(_)));
        assert_eq!(format!("{e}"), "Failed to write x");
        assert_eq!(format!("{e:#}"), "Failed to write x: disk");
        // Wrapped again, it reads as before.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "Failed to write x: disk"
        );
    }

    #[test]
    fn a_broken_trail_is_its_own_kind() {
        let e: anyhow::Error = TrailBroken("cut".into()).into();
        assert!(matches!(Error::from(e), Error::TrailBroken(_)));
    }

    #[test]
    fn an_error_round_trips_through_anyhow() {
        let e: anyhow::Error = Error::not_found("no hold h").into();
        let e = Error::from(e);
        assert!(matches!(e, Error::NotFound(_)));
        assert!(e.is_refusal());
    }

    #[test]
    fn a_failure_under_context_keeps_the_context() {
        let inner = Error::target("t", anyhow::anyhow!("cannot read"));
        assert!(matches!(inner, Error::TargetFailed { .. }));
        let e = Error::from(anyhow::Error::from(inner).context("Failed to append"));
        assert!(matches!(&e, Error::TargetFailed { target, .. } if target == "t"));
        assert_eq!(format!("{e:#}"), "Failed to append: cannot read");
    }
}
