//! The executor hyper's HTTP/2 connections spawn their stream tasks on: this worker's
//! local task set (the proxy's bodies are not `Send`).

/// Spawns on the current worker's `LocalSet`.
#[derive(Clone, Copy)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
