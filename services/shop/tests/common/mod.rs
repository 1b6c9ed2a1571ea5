//! Running the real `shop` binary in tests: whole shops, single services, signals.

#![allow(dead_code)] // each test binary uses its own part of this

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod stack;

pub const SHOP: &str = env!("CARGO_BIN_EXE_shop");

/// How many ports `shop up` takes from its `--port` on: one per service.
pub const SHOP_UP_PORTS: u16 = shop::ServiceName::ALL.len() as u16;

/// A base port with `count` free ports after it. Each call in a process gets its own range, so
/// tests running side by side never pick the same ports. The ports are below Linux's ephemeral
/// range (32768 and up), so an outgoing connection cannot take one between this check and the
/// service's bind.
pub fn free_ports(count: u16) -> u16 {
    // Ranges one whole `shop up` apart, so that two calls of one process never overlap.
    assert!(
        count <= SHOP_UP_PORTS,
        "at most {SHOP_UP_PORTS} ports at once"
    );
    let stride = u32::from(SHOP_UP_PORTS);
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id() % 400 * 100;
    for _ in 0..200 {
        let slot = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = 20_000 + ((start + slot * stride) % 12_000) as u16;
        let listeners: Vec<_> = (0..count)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if listeners.len() == count as usize {
            return base;
        }
    }
    panic!("no {count} free consecutive ports on 127.0.0.1");
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("shop-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process started by a test; SIGKILLed on drop unless it already exited.
pub struct Process {
    pub name: String,
    pub child: Child,
}

impl Process {
    /// Starts `shop <args>` with `env`; its output is dropped, its logs at `warn` unless `SHOP_LOG`
    /// says otherwise.
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = shop_command(args, env, "warn");
        command.stdout(Stdio::null());
        Self::spawn(name, command)
    }

    /// Like [`Process::start`], with its output (the logs, at `info` by default) appended to `log`.
    pub fn start_logging(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        log: &std::path::Path,
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut command = shop_command(args, env, "info");
        command.stdout(file.try_clone().unwrap()).stderr(file);
        Self::spawn(name, command)
    }

    fn spawn(name: &str, mut command: Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("signalling {}: {e}", self.name));
    }

    /// Waits for the process to exit, at most `limit`, without blocking the test's runtime (the
    /// test's own clients may need to keep running meanwhile).
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `shop <args>` with `env`, text logs at `SHOP_LOG` (else `log_level`).
fn shop_command(args: &[&str], env: &[(&str, String)], log_level: &str) -> Command {
    wrapped_shop_command(&[], args, env, log_level)
}

/// [`shop_command`], run by `wrapper` (a program and its arguments, `shop` and its arguments
/// after them) when one is given.
fn wrapped_shop_command(
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, String)],
    log_level: &str,
) -> Command {
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(SHOP);
            command
        }
        None => Command::new(SHOP),
    };
    command
        .args(args)
        .env(
            "SHOP_LOG",
            std::env::var("SHOP_LOG").unwrap_or_else(|_| log_level.into()),
        )
        .env("SHOP_LOG_FORMAT", "text");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Polls `url` until it answers 2xx.
pub async fn wait_ready(url: &str, limit: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `shop up` on [`SHOP_UP_PORTS`] ports from `port` on, its data in `data`, with
/// `args` and `env` added; returns once the gateway sees every service ready. Stop it with
/// [`interrupt`].
pub async fn shop_up(data: &TempDir, port: u16, args: &[&str], env: &[(&str, String)]) -> Process {
    let port_arg = port.to_string();
    let mut all = vec![
        "up",
        "--data-dir",
        data.0.to_str().unwrap(),
        "--port",
        &port_arg,
    ];
    all.extend_from_slice(args);
    let process = Process::start("shop up", &all, env);
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz/upstreams"),
        Duration::from_secs(60),
    )
    .await;
    process
}

/// Ctrl-C, so `shop up` stops its services (a SIGKILL on drop would leave them running); it must
/// exit cleanly.
pub async fn interrupt(mut shop: Process) {
    shop.signal(Signal::SIGINT);
    assert!(shop.wait(Duration::from_secs(30)).await.success());
}

/// Whether this process runs as root (the small-disk tests mount a tmpfs).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .to_owned();
            uids.split_whitespace()
                .nth(1)
                .map(|effective| effective == "0")
        })
        .unwrap_or(false)
}

/// One service as its own process, like [`serve`], with its SQLite file on a tmpfs of `mib` MiB
/// mounted in a mount namespace of the process's own, so a test can fill that disk and nothing
/// else sees it. The folder holding the file, as the test reaches it (through
/// `/proc/<pid>/root`), comes back with the process. Needs root; `None` without it, except under
/// `CI=true`, where that fails.
pub async fn serve_on_small_disk(
    service: &str,
    port: u16,
    dir: &TempDir,
    mib: u32,
) -> Option<(Process, PathBuf)> {
    if !is_root() {
        assert!(
            !shop_kit::testing::in_ci(),
            "the small-disk test mounts a tmpfs: under CI=true it must run as root"
        );
        eprintln!("SKIPPED: mounting a small disk needs root");
        return None;
    }
    let disk = dir.0.join("small-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let disk_arg = disk.to_str().unwrap().to_owned();
    let size = format!("size={mib}m");
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs -o "$1" shop-test-disk "$2" && shift 2 && exec "$@""#,
        "sh",
        &size,
        &disk_arg,
    ];
    let env = [
        ("SHOP_LISTEN", format!("127.0.0.1:{port}")),
        (
            "DATABASE_URL",
            format!("sqlite://{}", disk.join(format!("{service}.db")).display()),
        ),
    ];
    let log = dir.0.join(format!("{service}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = wrapped_shop_command(&wrapper, &["serve", service], &env, "info");
    command.stdout(file.try_clone().unwrap()).stderr(file);
    let process = Process::spawn(service, command);
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "{service} on a small disk not ready; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_from_here = PathBuf::from(format!("/proc/{}/root", process.child.id()))
        .join(disk.strip_prefix("/").unwrap());
    Some((process, seen_from_here))
}

/// One service as its own process, listening on `port`, with its SQLite file in `dir`.
pub async fn serve(service: &str, port: u16, dir: &TempDir, extra: &[(&str, String)]) -> Process {
    let mut env = vec![
        ("SHOP_LISTEN", format!("127.0.0.1:{port}")),
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.0.join(format!("{service}.db")).display()),
        ),
    ];
    env.extend(extra.iter().cloned());
    let process = Process::start(service, &["serve", service], &env);
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await;
    process
}
