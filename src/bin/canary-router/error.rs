//! What stops a command; the message is the line the user sees.

/// What stops a command.
#[derive(Debug)]
pub enum Error {
    /// An input that cannot be read or mapped, or an output that cannot be written.
    Input(String),
    /// The filter refused a configuration; each refusal is already printed.
    Refused,
    /// The status view could not be fetched or read.
    Http(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Input(m) | Error::Http(m) => f.write_str(m),
            Error::Refused => f.write_str("configuration rejected"),
        }
    }
}
