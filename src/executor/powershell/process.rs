//! Runs one script through the shell as a child process: the script on standard input, standard output and standard
//! error drained at the same time (reading one after the other can deadlock when the other pipe fills), both capped,
//! and a deadline past which the child and everything it started are killed.
//!
//! This module knows nothing of Exchange, actions or JSON: it returns what the process did.
//!
//! **Invariant:** no process this module starts outlives its deadline, nor the future that runs it: the child leads
//! its own process group (on Windows, its own tree), and the whole group is killed on timeout or cancellation.
//!
//! **Invariant:** the child's environment is built, not inherited: the platform's basics ([`BASICS`]) and the
//! names in `executor.pass_env`, never an `HSR_*` variable (the service's own secrets live there).

use std::ffi::OsString;
use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Enough for any cmdlet output the executor reads; more means something is wrong, and the JSON will not parse.
const STDOUT_LIMIT: usize = 1 << 20;
/// Standard error is kept from its end, where PowerShell's error record is.
const STDERR_LIMIT: usize = 64 << 10;
/// After a kill, how long to wait for the pipes to close before giving up on what is left in them.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// What a stream said, within its limit.
#[derive(Debug, Default, Clone)]
pub(super) struct Capture {
    pub bytes: Vec<u8>,
    /// Whether the stream said more than was kept.
    pub truncated: bool,
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Debug, Clone, Copy)]
enum Keep {
    Head,
    Tail,
}

/// How a run ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The process exited by itself; `code` is `None` when a signal ended it.
    Exited { code: Option<i32>, stdout: Capture, stderr: Capture },
    /// The deadline passed; the process tree was killed.
    TimedOut { stderr: Capture },
    /// The shell could not be started, or waiting for it failed.
    Failed(io::Error),
}

/// What a shell needs of its environment to run at all, and to reach Exchange with the service's identity: the
/// search path, the user's home and temporary directories, the locale, the time zone and the Kerberos ticket cache.
#[cfg(unix)]
pub(super) const BASICS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "KRB5CCNAME",
    "KRB5_CONFIG",
];
#[cfg(windows)]
pub(super) const BASICS: &[&str] = &[
    "SystemRoot",
    "SystemDrive",
    "windir",
    "ComSpec",
    "PATH",
    "PATHEXT",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "USERNAME",
    "USERDOMAIN",
    "USERDNSDOMAIN",
    "COMPUTERNAME",
    "HOMEDRIVE",
    "HOMEPATH",
    "APPDATA",
    "LOCALAPPDATA",
    "ProgramData",
    "ProgramFiles",
    "ProgramFiles(x86)",
    "CommonProgramFiles",
    "ALLUSERSPROFILE",
    "PUBLIC",
    "PSModulePath",
    "OS",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
];

/// The environment the shell gets: of `vars` (the service's own), the [`BASICS`] and the `pass_env` names, and
/// never an `HSR_*` variable, whatever the lists say.
pub(super) fn environment(
    pass_env: &[String],
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    // Windows compares variable names without regard to case; Unix does not.
    let same = |a: &str, b: &str| if cfg!(windows) { a.eq_ignore_ascii_case(b) } else { a == b };
    vars.into_iter()
        .filter(|(name, _)| {
            let Some(name) = name.to_str() else { return false };
            !name.to_ascii_uppercase().starts_with("HSR_")
                && (BASICS.iter().any(|basic| same(basic, name))
                    || pass_env.iter().any(|wanted| same(wanted, name)))
        })
        .collect()
}

/// Runs `program args...` with `script` on its standard input, for at most `deadline`, with exactly `env` as its
/// environment.
pub(super) async fn run(
    program: &str,
    args: &[String],
    env: &[(OsString, OsString)],
    script: &str,
    deadline: Duration,
) -> Ended {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Ended::Failed(err),
    };
    let mut tree = ProcessTree { pid: child.id() };

    // The script is written from its own task so that a shell that answers before reading all of it cannot stall
    // the readers; dropping the handle closes standard input, which tells the shell the script is complete.
    if let Some(mut stdin) = child.stdin.take() {
        let script = script.as_bytes().to_vec();
        tokio::spawn(async move {
            // A shell that exits without reading its input breaks the pipe; its exit code tells the story.
            let _ = stdin.write_all(&script).await;
        });
    }
    let stdout = Arc::new(Mutex::new(Capture::default()));
    let stderr = Arc::new(Mutex::new(Capture::default()));
    let mut readers = [
        tokio::spawn(drain(child.stdout.take(), STDOUT_LIMIT, Keep::Head, Arc::clone(&stdout))),
        tokio::spawn(drain(child.stderr.take(), STDERR_LIMIT, Keep::Tail, Arc::clone(&stderr))),
    ];

    let finished = tokio::time::timeout(deadline, async {
        let status = child.wait().await;
        // A grandchild may still hold the pipes open; the deadline covers it too.
        join(&mut readers).await;
        status
    })
    .await;
    let take =
        |capture: &Arc<Mutex<Capture>>| std::mem::take(&mut *capture.lock().expect("capture lock"));
    match finished {
        Ok(Ok(status)) => {
            tree.forget();
            Ended::Exited { code: status.code(), stdout: take(&stdout), stderr: take(&stderr) }
        }
        Ok(Err(err)) => Ended::Failed(err),
        Err(_elapsed) => {
            tree.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = tokio::time::timeout(DRAIN_AFTER_KILL, join(&mut readers)).await;
            readers.iter().for_each(|reader| reader.abort());
            Ended::TimedOut { stderr: take(&stderr) }
        }
    }
}

async fn join(readers: &mut [tokio::task::JoinHandle<()>]) {
    for reader in readers {
        let _ = reader.await;
    }
}

/// Reads a stream to its end, keeping at most `limit` bytes of it, from its head or its tail.
async fn drain(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
    keep: Keep,
    into: Arc<Mutex<Capture>>,
) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0; 16 << 10];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut capture = into.lock().expect("capture lock");
        match keep {
            Keep::Head => {
                let room = limit.saturating_sub(capture.bytes.len());
                capture.bytes.extend_from_slice(&buf[..n.min(room)]);
                capture.truncated |= n > room;
            }
            Keep::Tail => {
                capture.bytes.extend_from_slice(&buf[..n]);
                if let Some(excess) =
                    capture.bytes.len().checked_sub(limit).filter(|excess| *excess > 0)
                {
                    capture.bytes.drain(..excess);
                    capture.truncated = true;
                }
            }
        }
    }
}

/// The child and whatever it started; killed when dropped unless the child ended by itself.
struct ProcessTree {
    pid: Option<u32>,
}

impl ProcessTree {
    /// The child exited and its pipes closed: nothing of it is left to kill.
    fn forget(&mut self) {
        self.pid = None;
    }

    fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill_tree(pid);
        }
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the process group the child leads. The child is not reaped before this runs, so its id still names our
/// group and no other.
#[cfg(unix)]
fn kill_tree(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) takes plain integers and touches no memory; a negative pid addresses the process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Kills the child and its descendants; `kill_on_drop` alone would leave the descendants running.
#[cfg(windows)]
fn kill_tree(pid: u32) {
    let pid = pid.to_string();
    let _ = std::process::Command::new("taskkill")
        .args(["/T", "/F", "/PID", pid.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> (String, Vec<String>) {
        ("sh".into(), vec!["-c".into(), script.into()])
    }

    fn basics() -> Vec<(OsString, OsString)> {
        environment(&[], std::env::vars_os())
    }

    fn vars(names: &[&str]) -> Vec<(OsString, OsString)> {
        names
            .iter()
            .map(|name| (OsString::from(name), OsString::from(format!("value of {name}"))))
            .collect()
    }

    #[test]
    fn the_shell_gets_the_basics_and_pass_env_and_never_hsr_variables() {
        let service = vars(&[
            "PATH",
            "HOME",
            "LANG",
            "KRB5CCNAME",
            "HSR_ADMIN_TOKEN",
            "HSR_WEBHOOK_SECRET",
            "HSR_SMTP_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "HTTPS_PROXY",
            "Hsr_lower",
        ]);
        let pass = ["HTTPS_PROXY".to_owned(), "HSR_ADMIN_TOKEN".to_owned(), "NOT_SET".to_owned()];
        let names: Vec<String> = environment(&pass, service)
            .into_iter()
            .map(|(name, _)| name.into_string().unwrap())
            .collect();
        assert_eq!(names, ["PATH", "HOME", "LANG", "KRB5CCNAME", "HTTPS_PROXY"]);
    }

    #[tokio::test]
    async fn the_child_sees_only_the_environment_it_is_given() {
        let (program, args) = sh("env");
        let env = vec![
            (OsString::from("PATH"), std::env::var_os("PATH").unwrap()),
            (OsString::from("PASSED"), OsString::from("yes")),
        ];
        let Ended::Exited { stdout, .. } =
            run(&program, &args, &env, "", Duration::from_secs(20)).await
        else {
            panic!("did not exit")
        };
        let mut names: Vec<String> =
            stdout.text().lines().filter_map(|l| l.split('=').next()).map(str::to_owned).collect();
        names.retain(|n| n != "PWD" && n != "SHLVL" && n != "_" && n != "OLDPWD");
        names.sort();
        assert_eq!(names, ["PASSED", "PATH"]);
    }

    #[tokio::test]
    async fn the_script_arrives_on_stdin_and_both_streams_are_drained_within_their_limits() {
        // More than a pipe buffer on both streams at once: reading one after the other would deadlock.
        let (program, args) = sh("cat; head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 2000000 /dev/zero | tr '\\0' o; exit 3");
        let Ended::Exited { code, stdout, stderr } =
            run(&program, &args, &basics(), "the script\n", Duration::from_secs(20)).await
        else {
            panic!("did not exit")
        };
        assert_eq!(code, Some(3));
        assert!(
            stdout.bytes.starts_with(b"the script\no")
                && stdout.bytes.len() == STDOUT_LIMIT
                && stdout.truncated
        );
        assert!(
            stderr.bytes.len() == STDERR_LIMIT
                && stderr.truncated
                && stderr.bytes.iter().all(|b| *b == b'e')
        );
    }

    #[tokio::test]
    async fn a_program_that_is_not_there_fails_to_start() {
        let ended = run("/nonexistent/pwsh", &[], &basics(), "", Duration::from_secs(5)).await;
        assert!(
            matches!(ended, Ended::Failed(ref err) if err.kind() == io::ErrorKind::NotFound),
            "{ended:?}"
        );
    }
}
