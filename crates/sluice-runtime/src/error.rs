/// Errors of a worker runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The worker could not be launched (bad shell, no free port, log file not writable, …).
    #[error("could not launch worker: {0}")]
    Launch(String),
    /// Signalling or inspecting a worker failed.
    #[error("could not control worker {worker}: {message}")]
    Control { worker: String, message: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
