//! What a long operation tells its user while it runs, without printing:
//! the library hands each [`Note`] to a [`Notes`] sink, and the CLI prints
//! them (progress only on a terminal).

/// One thing worth telling while an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note<'a> {
    /// About to wait for another genboot (a lock): says who and what.
    Waiting(&'a str),
    /// A step of a long build.
    Progress(&'a str),
    /// Something the user should fix, though the operation goes on.
    Warning(&'a str),
    /// Something the user should know (e.g. a FAT volume that was not
    /// cleanly unmounted).
    Info(&'a str),
}

/// Where notes go.
pub trait Notes {
    fn note(&self, note: Note<'_>);
}

/// Notes nobody reads (benchmarks, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Notes for Silent {
    fn note(&self, _: Note<'_>) {}
}

/// Whether to wait for a lock another genboot holds.
#[derive(Clone, Copy)]
pub enum Wait<'a> {
    /// Fail at once (`--no-wait`).
    No,
    /// Wait, after saying so.
    Yes(&'a dyn Notes),
}

impl std::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::No => "Wait::No",
            Wait::Yes(_) => "Wait::Yes",
        })
    }
}
