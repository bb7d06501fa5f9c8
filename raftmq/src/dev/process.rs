//! Broker child processes: started so that they die with the supervisor, stopped with SIGTERM
//! then SIGKILL, each wait bounded. Also the tail of a broker's log, to show why it died.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// How often exits are polled while stopping.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed child may take to be reaped before it is reported as stuck.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// A log tail shows at most this many lines, read from at most this many bytes at the end.
pub const TAIL_LINES: usize = 20;
const TAIL_BYTES: u64 = 16 << 10;

/// One running broker.
pub struct BrokerProcess {
    pub id: u64,
    pub log_path: PathBuf,
    child: Child,
    /// Set once the child is reaped; its pid may then belong to another process.
    exit: Option<ExitStatus>,
}

impl BrokerProcess {
    /// Starts `program args`, appending its stdout and stderr to `log_path` after a line that
    /// marks the start.
    ///
    /// The child gets SIGTERM if the supervisor dies, however it dies, and has a process group of
    /// its own, so that a Ctrl-C at the terminal reaches only the supervisor, which stops the
    /// brokers in order. PR_SET_PDEATHSIG fires when the *thread* that forked exits, so this must
    /// be called from a thread that lives as long as the supervisor (`dev::run` uses the main
    /// thread, in a current-thread runtime).
    pub fn spawn(id: u64, program: &Path, args: &[&OsStr], log_path: &Path) -> anyhow::Result<BrokerProcess> {
        let mut log =
            OpenOptions::new().create(true).append(true).open(log_path).with_context(|| format!("opening {}", log_path.display()))?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        writeln!(log, "--- raftmq dev: starting broker {id} (unix time {started}) ---")
            .with_context(|| format!("writing {}", log_path.display()))?;
        let stderr = log.try_clone().with_context(|| format!("opening {} for stderr", log_path.display()))?;
        let supervisor = std::process::id();
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(log).stderr(stderr).process_group(0);
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are sound: it makes two system calls (prctl, getppid),
        // allocates nothing and builds its errors from errno or a constant.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The supervisor may have died before prctl took effect; then no signal will come.
                if libc::getppid() as u32 != supervisor {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("starting broker {id} ({})", program.display()))?;
        Ok(BrokerProcess { id, log_path: log_path.to_path_buf(), child, exit: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it), without waiting.
    pub fn poll_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }

    /// Asks the child to shut down. A child already reaped is left alone.
    pub fn terminate(&mut self) -> io::Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).map_err(io::Error::other)?;
        // SAFETY: kill has no memory preconditions. The pid is our child's and the child is not
        // reaped yet (reaping happens only through `self.child`), so the pid cannot have been
        // reused by another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILLs the child if it has not exited.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(());
        }
        self.child.kill()
    }
}

/// What became of one broker when the cluster was stopped.
#[derive(Debug)]
pub enum Stopped {
    /// It exited (after SIGTERM, or before).
    Exited(ExitStatus),
    /// It did not exit within the grace period and was SIGKILLed.
    Killed,
    /// Not even SIGKILL reaped it in time (uninterruptible sleep in the kernel, say).
    Stuck,
}

/// Stops every broker: SIGTERM to all, polled until all have exited, `grace` has passed or
/// `hurry` completes (a second Ctrl-C, say), then SIGKILL for the rest.
pub async fn stop_all(brokers: &mut [BrokerProcess], grace: Duration, hurry: impl Future<Output = ()>) -> Vec<(u64, Stopped)> {
    for b in brokers.iter_mut() {
        if let Err(e) = b.terminate() {
            eprintln!("raftmq dev: could not send SIGTERM to broker {}: {e}", b.id);
        }
    }
    let deadline = Instant::now() + grace;
    tokio::pin!(hurry);
    while Instant::now() < deadline && !all_exited(brokers) {
        tokio::select! {
            () = &mut hurry => break,
            () = tokio::time::sleep(STOP_POLL) => {}
        }
    }
    let mut killed = Vec::new();
    for b in brokers.iter_mut() {
        if matches!(b.poll_exit(), Ok(None)) {
            if let Err(e) = b.kill() {
                eprintln!("raftmq dev: could not SIGKILL broker {}: {e}", b.id);
            }
            killed.push(b.id);
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline && !all_exited(brokers) {
        tokio::time::sleep(STOP_POLL).await;
    }
    brokers
        .iter_mut()
        .map(|b| {
            let outcome = match b.poll_exit() {
                Ok(Some(_)) if killed.contains(&b.id) => Stopped::Killed,
                Ok(Some(status)) => Stopped::Exited(status),
                Ok(None) | Err(_) => Stopped::Stuck,
            };
            (b.id, outcome)
        })
        .collect()
}

fn all_exited(brokers: &mut [BrokerProcess]) -> bool {
    brokers.iter_mut().all(|b| !matches!(b.poll_exit(), Ok(None)))
}

/// Checks that each address can be bound now, naming the first that cannot.
pub fn check_ports_free(ports: &[(SocketAddr, String)]) -> anyhow::Result<()> {
    for (addr, what) in ports {
        // Bound and dropped at once: the broker binds it again a moment later.
        match TcpListener::bind(addr) {
            Ok(listener) => drop(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                anyhow::bail!("port {} ({what}) is in use on {}: stop what holds it, or choose another --base-port", addr.port(), addr.ip())
            }
            Err(e) => anyhow::bail!("cannot bind {addr} ({what}): {e}"),
        }
    }
    Ok(())
}

/// The last `TAIL_LINES` lines of the log at `path`.
pub fn log_tail(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    Ok(last_lines(&bytes, start > 0, TAIL_LINES))
}

/// The last `n` lines of `bytes` (lossily decoded), without the first line when it may have been
/// cut by reading from the middle of the file.
fn last_lines(bytes: &[u8], cut_at_start: bool, n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = if cut_at_start { text.split_once('\n').map(|(_, rest)| rest).unwrap_or("") } else { &text };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", false, 2), "b\nc");
        assert_eq!(last_lines(b"a\nb\nc", false, 5), "a\nb\nc");
        assert_eq!(last_lines(b"", false, 5), "");
        // A read from the middle drops its partial first line.
        assert_eq!(last_lines(b"rtial\nwhole\n", true, 5), "whole");
        assert_eq!(last_lines(b"no newline at all", true, 5), "");
        assert_eq!(last_lines(b"bad \xff byte\n", false, 5), "bad \u{fffd} byte");
    }

    #[test]
    fn log_tail_reads_only_the_end_of_a_large_log() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker.log");
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &text)?;
        let tail = log_tail(&path)?;
        let expected: Vec<String> = (10_000 - TAIL_LINES..10_000).map(|i| format!("line {i}")).collect();
        assert_eq!(tail, expected.join("\n"));
        Ok(())
    }

    fn sh(dir: &Path, script: &str) -> anyhow::Result<BrokerProcess> {
        BrokerProcess::spawn(1, Path::new("/bin/sh"), &[OsStr::new("-c"), OsStr::new(script)], &dir.join("broker.log"))
    }

    async fn wait_exit(b: &mut BrokerProcess) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = b.poll_exit()? {
                return Ok(status);
            }
            tokio::time::sleep(STOP_POLL).await;
        }
        anyhow::bail!("the child did not exit in 10 s")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_goes_to_the_log_after_a_start_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("broker.log"), "from an earlier run\n")?;
        let mut b = sh(dir.path(), "echo out; echo err >&2; exit 3")?;
        assert_eq!(wait_exit(&mut b).await?.code(), Some(3));
        let tail = log_tail(&b.log_path)?;
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines[0], "from an earlier run");
        assert!(lines[1].starts_with("--- raftmq dev: starting broker 1"), "{tail}");
        assert_eq!(&lines[2..], ["out", "err"]);
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn children_have_their_own_process_group() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut b = sh(dir.path(), "cut -d' ' -f5 /proc/$$/stat")?;
        wait_exit(&mut b).await?;
        let pgid = log_tail(&b.log_path)?.lines().last().unwrap_or_default().trim().to_owned();
        assert_eq!(pgid, b.pid().to_string());
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_all_terminates_then_kills() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let polite_dir = dir.path().join("polite");
        let stubborn_dir = dir.path().join("stubborn");
        std::fs::create_dir_all(&polite_dir)?;
        std::fs::create_dir_all(&stubborn_dir)?;
        let polite = sh(&polite_dir, "exec sleep 30")?;
        // Ignores SIGTERM; the sleep is a child of the shell so the trap stays in force.
        let mut stubborn = sh(&stubborn_dir, "trap '' TERM; echo ready; while true; do sleep 1; done")?;
        stubborn.id = 2;
        // Let the shell install its trap before the signal comes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log_tail(&stubborn.log_path)?.ends_with("ready") && Instant::now() < deadline {
            tokio::time::sleep(STOP_POLL).await;
        }
        let started = Instant::now();
        let mut brokers = vec![polite, stubborn];
        let outcome = stop_all(&mut brokers, Duration::from_millis(500), std::future::pending()).await;
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(matches!(&outcome[0], (1, Stopped::Exited(_))), "{outcome:?}");
        assert!(matches!(&outcome[1], (2, Stopped::Killed)), "{outcome:?}");
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hurry_skips_the_grace_period() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut brokers = vec![sh(dir.path(), "trap '' TERM; while true; do sleep 1; done")?];
        let started = Instant::now();
        let outcome = stop_all(&mut brokers, Duration::from_secs(60), std::future::ready(())).await;
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(matches!(&outcome[0], (1, Stopped::Killed | Stopped::Exited(_))), "{outcome:?}");
        Ok(())
    }

    #[test]
    fn a_busy_port_is_named() -> anyhow::Result<()> {
        let held = TcpListener::bind("127.0.0.1:0")?;
        let busy = held.local_addr()?;
        let free = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        check_ports_free(&[(free, "broker 1 client".to_owned())])?;
        let e = check_ports_free(&[(free, "broker 1 client".to_owned()), (busy, "broker 1 peer".to_owned())]).err().map(|e| e.to_string());
        assert_eq!(
            e,
            Some(format!("port {} (broker 1 peer) is in use on 127.0.0.1: stop what holds it, or choose another --base-port", busy.port()))
        );
        Ok(())
    }
}
