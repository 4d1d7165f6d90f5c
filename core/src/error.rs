//! The core's error type. Every fallible core function returns
//! `Result<_, Error>`; the C API crate maps each variant to one status code
//! with a single exhaustive `match` and keeps the text as the thread's last
//! error message.

use thiserror::Error;

/// Why a core operation failed. No variant is ever produced after the cache
/// was mutated: every operation validates all of its arguments first.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// An argument has a value no call accepts (a duplicate slot, a
    /// misaligned buffer, an unknown struct size).
    #[error("{0}")]
    InvalidArg(String),
    /// The configuration breaks an invariant; the message names the field.
    #[error("{0}")]
    InvalidConfig(String),
    /// A layer, slot or counter outside the configured range.
    #[error("{0}")]
    OutOfRange(String),
    /// A buffer length that differs from what the shape needs.
    #[error("{0}")]
    ShapeMismatch(String),
    /// A dtype value that names no supported dtype.
    #[error("{0}")]
    UnsupportedDtype(String),
    /// The allocator refused the request.
    #[error("{0}")]
    OutOfMemory(String),
    /// The handle panicked during an earlier mutation and refuses mutation.
    #[error("{0}")]
    Poisoned(String),
    /// Every slot is acquired.
    #[error("{0}")]
    NoFreeSlot(String),
    /// A snapshot or file is damaged: bad magic, truncated, checksum
    /// mismatch, or a layout that contradicts its header.
    #[error("{0}")]
    Corrupt(String),
    /// A well-formed snapshot or file made for another shape or format
    /// version.
    #[error("{0}")]
    Incompatible(String),
    /// The operating system refused an I/O operation; the message carries
    /// its error.
    #[error("{0}")]
    Io(String),
    /// The operation exists but is not available in this build or on this
    /// machine.
    #[error("{0}")]
    Unsupported(String),
    /// A key with no entry in a prefix store; the message says why.
    #[error("{0}")]
    NotFound(String),
}

/// Shorthand for the core's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
