//! Stdio and terminal wiring for a new process (an init's Create or an exec's Start).

use std::future::Future;

use crate::error::{Error, Result};
use crate::stdio::tty::{Console, ConsoleSocket};
use crate::stdio::{ChildIo, Keepalive, StdioPaths, open_stdio, open_terminal_output};

/// Runs `launch` (a create or an exec) with the process's stdio: fds opened here, or for a
/// terminal a console socket on which the init sends its pty master. The process exists
/// once this returns Ok, even when attaching its terminal failed (the inner Err): the
/// caller removes it then.
pub async fn launch<F>(
    console_dir: &std::path::Path,
    namespace: &str,
    id: &str,
    stdio: &StdioPaths,
    launch: impl FnOnce(ChildIo) -> F,
) -> Result<(i32, Keepalive, Result<Option<Console>>)>
where
    F: Future<Output = Result<i32>>,
{
    if !stdio.terminal {
        let (child, keep) = open_stdio(stdio, id, namespace).await?;
        let pid = launch(ChildIo::Fds(child)).await?;
        return Ok((pid, keep, Ok(None)));
    }
    let mut keep = Keepalive::default();
    let out = open_terminal_output(stdio, id, namespace, &mut keep).await?;
    let sock = ConsoleSocket::bind(console_dir)?;
    let path = sock.path().to_path_buf();
    let receiving = tokio::spawn(sock.receive());
    let pid = match launch(ChildIo::Console(path)).await {
        Ok(pid) => pid,
        Err(e) => {
            receiving.abort();
            return Err(e);
        }
    };
    let console = match receiving.await {
        Ok(Ok(master)) => Console::attach(master, &stdio.stdin, out, keep).map(Some),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::Internal(format!("terminal receive task: {e}"))),
    };
    Ok((pid, Keepalive::default(), console))
}
