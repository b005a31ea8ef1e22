//! Pure query logic, no IO: parse what the API receives ([`time`], [`selector`]) and compute
//! what it returns from what the store read ([`tree`] for flame graphs, top functions and diffs,
//! [`red`] for rate, error ratio and latency quantiles). Start with [`tree::FlameGraph`].

pub mod red;
pub mod selector;
pub mod time;
pub mod tree;

pub use selector::Selector;

/// Malformed query input (a parameter, a selector, a time); always a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// A time parameter could not be parsed.
    #[error(
        "invalid time {input:?}: {reason} (use unix seconds/ms/ns, RFC 3339, `now` or `now-1h`)"
    )]
    Time {
        /// The input as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration could not be parsed.
    #[error("invalid duration {input:?}: {reason} (use e.g. `30s`, `15m`, `1h`, `7d`)")]
    Duration {
        /// The input as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label selector could not be parsed.
    #[error("invalid selector {input:?} at byte {offset}: {reason}")]
    Selector {
        /// The selector as given.
        input: String,
        /// Where the parser stopped.
        offset: usize,
        /// What it expected.
        reason: String,
    },
}
