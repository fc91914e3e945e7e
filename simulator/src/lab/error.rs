//! The lab's errors: each names what failed and what to do.

/// Something the lab could not do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Not root.
    #[error(
        "the lab needs root to create network namespaces and shape links with tc; run it as root (sudo)"
    )]
    NotRoot,
    /// Another lab is running on this machine.
    #[error("another lab is running (pid {0}); wait for it or stop it (its namespaces start with `cml-`)")]
    Busy(u32),
    /// The scenario is too large or uses what the lab cannot run.
    #[error("the lab cannot run this scenario: {0}")]
    Unsupported(String),
    /// A command (ip, tc, the node CLI) failed.
    #[error("`{cmd}` failed: {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr or the OS error.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The file and the operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node configuration could not be written.
    #[error("cannot write a lab node configuration: {0}")]
    Config(String),
    /// A daemon did not come up or answer.
    #[error("node {node}: {reason}; its log is {log}")]
    Daemon {
        /// The node's name.
        node: String,
        /// What went wrong.
        reason: String,
        /// Where its log is.
        log: String,
    },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted; everything the lab created has been removed")]
    Interrupted,
    /// The simulator's prediction or the outputs failed.
    #[error(transparent)]
    Sim(#[from] crate::Error),
}

impl LabError {
    /// An I/O error on `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Io { what, source }
    }
}
