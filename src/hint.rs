//! What the user can do about an error, kept apart from its message: an
//! error's `Display` says what went wrong (with its cause), [`Hint::hint`]
//! says what to do. The CLI prints the hint on a line of its own after the
//! message (`Hint: …`); a JSON or quiet consumer can leave it out.

use std::fmt::Display;

/// An error that may know what to do about it.
pub trait Hint: Display {
    /// The advice, without the `Hint: ` prefix; `None` when there is none.
    fn hint(&self) -> Option<String>;

    /// The message and, on the next line, the hint: for an error that
    /// becomes part of another message (a warning, a problem in a report).
    fn with_hint(&self) -> String {
        match self.hint() {
            Some(h) => format!("{self}\nHint: {h}"),
            None => self.to_string(),
        }
    }
}
