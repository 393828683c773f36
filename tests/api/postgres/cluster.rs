//! A throwaway PostgreSQL cluster for the tests: Debian's server binaries (the newest installed version under
//! `/usr/lib/postgresql`), a data directory in a temporary directory, the server on a free loopback port with its
//! socket directory inside that directory, trust authentication (loopback only) and `fsync=on`, as a real database
//! would commit. One cluster serves every test of this binary; each test takes a fresh database of its own.
//!
//! PostgreSQL refuses to run as root: under root (as tests run in CI) the cluster's directory belongs to `nobody`,
//! and `initdb` and the server run as `nobody`. The server is stopped by its PID (`SIGQUIT`, PostgreSQL's immediate
//! shutdown: the cluster is thrown away, so it needs no shutdown checkpoint) when the test binary exits, and its
//! directory removed. Should the binary die without exiting (killed), the kernel sends the server the same signal
//! as the thread that started it ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    postmaster: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The binary's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let cluster = Cluster::start();
        // A static is never dropped: the cluster is stopped when the process exits normally, which is how the test
        // harness ends whether tests passed or failed.
        // SAFETY: atexit registers a function with no arguments that runs once, at exit.
        assert_eq!(
            unsafe { libc::atexit(stop_at_exit) },
            0,
            "cannot register the PostgreSQL cluster's stop at exit"
        );
        cluster
    })
}

extern "C" fn stop_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop();
    }
}

/// A fresh, empty database in the shared cluster: its URL.
pub async fn database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let cluster = cluster();
    let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    connect(&cluster.url("postgres"))
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    cluster.url(&name)
}

/// A plain client of the database at `url`, to look at what the store wrote.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Cluster {
    /// The certificate of the CA that signed the server's (PEM): what `sslrootcert` names.
    #[allow(dead_code)] // The TLS tests use it; the intake benchmark does not.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn start() -> Cluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("hsr-postgres-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL")
            .keep();
        let user = unprivileged_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot give {} to nobody: {e}", dir.display()));
        }
        let data = dir.join("data");
        // The server offers TLS with a certificate for 127.0.0.1 that the test CA signed; connections that do not
        // ask for it stay plain.
        let pki = crate::pki::Pki::new();
        for (from, to) in
            [(pki.server_certificate(), "server.crt"), (pki.server_key(), "server.key")]
        {
            std::fs::copy(&from, dir.join(to)).expect("the server's certificate and key");
            std::fs::set_permissions(
                dir.join(to),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("the server's key is private");
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(dir.join(to), Some(uid), Some(gid))
                    .expect("the server owns its key");
            }
        }
        std::fs::copy(pki.ca_file(), dir.join("ca.pem")).expect("the test CA's certificate");
        let output = as_user(Command::new(bin.join("initdb")), user, &dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("initdb").display()));
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // Another process may take the free port between our look and the server's bind: then try another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let log_path = dir.join(format!("postgres-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("the server's log file");
            let mut command = as_user(Command::new(bin.join("postgres")), user, &dir);
            command
                .arg("-D")
                .arg(&data)
                .args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=on",
                    "-c",
                    "track_commit_timestamp=on",
                    "-c",
                    "ssl=on",
                ])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", dir.join("server.crt").display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = spawn_postmaster(command);
            match wait_until_ready(&bin, port, &mut child) {
                Ok(()) => return Cluster { port, dir, postmaster: Mutex::new(Some(child)) },
                Err(why) => {
                    stop_child(&mut child);
                    failures.push(format!(
                        "port {port}: {why}\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    ));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("the test PostgreSQL server did not start:\n{}", failures.join("\n"));
    }

    /// Stops the server by its PID and removes its directory. Runs at exit: it must not panic.
    fn stop(&self) {
        let mut postmaster =
            self.postmaster.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mut child) = postmaster.take() {
            stop_child(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `SIGQUIT` (immediate shutdown: the server ends its sessions and exits at once), then a kill if it has not gone
/// within ten seconds; always reaped.
fn stop_child(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's PID, which is not reaped yet, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the server from a thread that lives as long as the process, so that the parent-death signal (which
/// follows the thread that forked, not the process) fires only when the process ends.
fn spawn_postmaster(mut command: Command) -> Child {
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec only prctl(2), which is async-signal-safe. It runs after the change of user, so
    // the kernel keeps the setting through exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (started, child) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let _ = started.send(command.spawn());
            loop {
                std::thread::park();
            }
        })
        .expect("a thread to start PostgreSQL from");
    child
        .recv()
        .expect("the starting thread answers")
        .unwrap_or_else(|e| panic!("cannot start postgres: {e}"))
}

fn wait_until_ready(bin: &Path, port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("postgres exited ({status})"));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-t",
                "1",
            ])
            .status()
            .map_err(|e| format!("cannot run pg_isready: {e}"))?;
        if ready.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("not accepting connections after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest installed server version's `bin` directory.
/// Whether PostgreSQL's server binaries are installed.
#[allow(dead_code)] // The intake benchmark asks; the tests need them.
pub fn installed() -> bool {
    newest_bin().is_some()
}

fn server_bin() -> PathBuf {
    match newest_bin() {
        Some(bin) => bin,
        None => panic!("the PostgreSQL tests need a PostgreSQL server: no /usr/lib/postgresql/*/bin/initdb; scripts/install-test-deps.sh installs it"),
    }
}

fn newest_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            entry.path().join("bin/initdb").exists().then(|| (version, entry.path().join("bin")))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// Under root, `nobody`'s user and group ids; otherwise none (the server runs as the tests' own user).
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: getpwnam returns null or a pointer to a record valid until the next call; it is read at once, and only
    // here, while the cluster is started once.
    let entry = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!entry.is_null(), "the PostgreSQL tests run as root and need the user nobody to run the server as (PostgreSQL refuses root)");
    // SAFETY: checked non-null above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn as_user(mut command: Command, user: Option<(u32, u32)>, dir: &Path) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
        .current_dir(dir)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
