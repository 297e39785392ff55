//! The S3 servers the tests run against: installed when missing, started on free 127.0.0.1 ports, stopped on
//! drop.
//!
//! - `moto_server` (PyPI `moto[server]`), the fake django-storages' own tests use; its conditional writes are
//!   atomic.
//! - `s3s-fs` (crates.io `s3s-fs` 0.14.1), which checks SigV4 signatures and presigned-URL expiry.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const S3S_VERSION: &str = "0.14.1";

/// Running servers; dropping this stops them and removes their data.
pub struct Servers {
    moto: Server,
    s3s: Server,
    s3s_access_key: String,
    s3s_secret_key: String,
    dir: PathBuf,
}

struct Server {
    name: &'static str,
    child: Child,
    endpoint: String,
}

impl Server {
    fn stop(&mut self) {
        // Closing the leash stops the server (if its shell is gone too, its watcher still sees the close); the
        // shell then ends.
        drop(self.child.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.wait();
            println!("xtask: stopped {} at {}", self.name, self.endpoint);
        }
    }
}

/// `command` run on a leash: a shell starts it and kills it once its own standard input, a pipe from this
/// process, reaches its end. That happens when this process closes the pipe (`Server::stop`) and also when it
/// ends without running its drops (SIGTERM, kill -9), so no server outlives the task that started it. The shell
/// ends with the server, with its exit code (128 + the signal's number when it was killed), and stops the
/// watcher then, so that a late close never kills a process that took the server's PID.
fn leashed(command: &Command) -> Command {
    // A background job's standard input is /dev/null, so the watcher reads the pipe as fd 3.
    const LEASH: &str = r#"exec 3<&0
"$@" </dev/null 3<&- & server=$!
(read -r _ <&3; kill -KILL "$server" 2>/dev/null) & watcher=$!
exec 3<&-
wait "$server"; status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;
    let mut shell = Command::new("sh");
    shell.args(["-c", LEASH, "sh"]).arg(command.get_program()).args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        shell.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    shell
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Stop the servers before removing the data they may still be writing.
        self.moto.stop();
        self.s3s.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Servers {
    /// Installs what is missing and starts both servers, waiting until they answer.
    pub fn start() -> Result<Self, String> {
        ensure_moto()?;
        let s3s_fs = ensure_s3s()?;
        remove_stale_data();
        let dir = std::env::temp_dir().join(format!("storages-xtask-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("s3s")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let started = Self::start_in(&dir, s3s_fs);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(dir: &std::path::Path, s3s_fs: PathBuf) -> Result<Self, String> {
        let dir = dir.to_path_buf();

        let port = free_port()?;
        let moto = spawn(
            "moto_server",
            Command::new(python()).args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]),
            port,
            &dir,
        )?;
        let s3s_access_key = format!("AKIDXTASK{}", std::process::id());
        let s3s_secret_key = format!("xtask-secret-{}-{}", std::process::id(), port);
        let port = free_port()?;
        let s3s = spawn(
            "s3s-fs",
            Command::new(s3s_fs)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &s3s_access_key, "--secret-key", &s3s_secret_key])
                .arg(dir.join("s3s")),
            port,
            &dir,
        )?;
        Ok(Servers { moto, s3s, s3s_access_key, s3s_secret_key, dir })
    }

    /// The environment the tests read the servers from.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("STORAGES_TEST_MOTO_ENDPOINT", self.moto.endpoint.clone()),
            ("STORAGES_TEST_S3S_ENDPOINT", self.s3s.endpoint.clone()),
            ("STORAGES_TEST_S3S_ACCESS_KEY", self.s3s_access_key.clone()),
            ("STORAGES_TEST_S3S_SECRET_KEY", self.s3s_secret_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Removes the data directories of earlier runs whose process is gone without its drops (killed): their servers
/// went with it (see [`leashed`]).
fn remove_stale_data() {
    // Without /proc (not Linux) a live run cannot be told from a dead one.
    if !alive("self") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("storages-xtask-")) else { continue };
        if pid.parse::<u32>().is_ok() && !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether /proc shows the process `pid` (`self`: whether there is a /proc).
fn alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// moto's server, installed with pip when missing. It is started as `python3 -m moto.server`, which needs no
/// console script on PATH (pyenv, for one, adds those only after a rehash).
fn ensure_moto() -> Result<(), String> {
    // flask and flask_cors come with the `server` extra; boto3 is what the tests use as another client.
    let modules = ["moto.server", "flask", "flask_cors", "boto3"];
    if modules.iter().all(|m| python_has(m)) {
        return Ok(());
    }
    println!("xtask: installing moto[server] with pip");
    let install = ["-m", "pip", "install", "--quiet", "moto[server]", "boto3"];
    if run(Command::new(python()).args(install)).is_err() {
        // A system Python that refuses (PEP 668) installs for the user instead.
        run(Command::new(python()).args(install).args(["--user", "--break-system-packages"]))?;
    }
    match modules.iter().find(|m| !python_has(m)) {
        None => Ok(()),
        Some(missing) => Err(format!("pip installed moto[server], but python cannot import {missing}")),
    }
}

/// `s3s-fs`, installed with cargo when missing.
fn ensure_s3s() -> Result<PathBuf, String> {
    let installed = find_program("s3s-fs").or_else(|| {
        let path = cargo_home().join("bin/s3s-fs");
        path.is_file().then_some(path)
    });
    if let Some(path) = installed {
        return Ok(path);
    }
    println!("xtask: installing s3s-fs {S3S_VERSION} with cargo (once; about two minutes)");
    run(Command::new(crate::cargo()).args([
        "install",
        &format!("s3s-fs@{S3S_VERSION}"),
        "--locked",
        "--features",
        "binary",
    ]))?;
    let path = cargo_home().join("bin/s3s-fs");
    path.is_file().then_some(path).ok_or_else(|| "cargo installed s3s-fs but it is not in $CARGO_HOME/bin".into())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}

fn python() -> &'static str {
    if find_program("python3").is_some() { "python3" } else { "python" }
}

fn python_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{command:?} failed ({status})")) }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Starts a server with its output in `dir/<name>.log` and waits until it answers HTTP on `port`.
fn spawn(name: &'static str, command: &mut Command, port: u16, dir: &std::path::Path) -> Result<Server, String> {
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = leashed(command)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let mut server = Server { name, child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("{name} exited ({status}) before answering:\n{log}"));
        }
        if answers_http(port) {
            println!("xtask: started {name} at {}", server.endpoint);
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
    Err(format!("{name} did not answer on 127.0.0.1:{port} within 60 s; see {}", log_path.display()))
}

fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leashed process ends when the pipe to its shell closes, as when the task that started it is killed.
    #[test]
    fn a_leashed_process_ends_when_its_leash_is_dropped() {
        let dir = tempfile_dir();
        let pid_file = dir.join("pid");
        let mut inner = Command::new("sh");
        inner.args(["-c", r#"echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 600"#, "sh"]).arg(&pid_file);
        let mut child = leashed(&inner).stdin(Stdio::piped()).spawn().expect("sh runs");
        let pid = wait_for(|| std::fs::read_to_string(&pid_file).ok()).trim().to_string();
        assert!(alive(&pid), "the leashed process runs");
        // The shell is not what is killed: closing its input alone must end the process.
        drop(child.stdin.take());
        wait_for(|| (!alive(&pid)).then_some(()));
        let status = child.wait().expect("the shell ends");
        assert!(!status.success(), "the shell ends with the killed process's status: {status}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A process that ends by itself ends its shell, with its exit code, and the watcher with them: nothing of
    /// the leash is left waiting for the pipe to close (and to kill whatever took the process's PID then).
    #[test]
    fn a_leashed_process_that_ends_by_itself_leaves_nothing_waiting() {
        // The process ends once `go` exists. Its path is on the command lines of the process, of the shell and of
        // the watcher (a subshell), which is how they are found.
        // (Not in `tempfile_dir`, which the other test removes when it ends.)
        let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos());
        let go = std::env::temp_dir().join(format!("xtask-leash-go-{}-{nanos}", std::process::id()));
        let mut inner = Command::new("sh");
        inner.args(["-c", r#"while [ ! -e "$1" ]; do sleep 0.02; done; exit 3"#, "sh"]).arg(&go);
        let mut child = leashed(&inner).stdin(Stdio::piped()).spawn().expect("sh runs");
        let marker = go.to_string_lossy().into_owned();
        let holding = || {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
                .filter(|cmdline| cmdline.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .count()
        };
        wait_for(|| (holding() == 3).then_some(()));
        std::fs::write(&go, "").expect("go");
        let status = wait_for(|| child.try_wait().expect("try_wait"));
        assert_eq!(status.code(), Some(3), "the shell ends with the process's exit code");
        // The pipe is still open: only the shell's own kill can end the watcher.
        wait_for(|| (holding() == 0).then_some(()));
        drop(child.stdin.take());
        let _ = std::fs::remove_file(&go);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-leash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    /// Polls `check` until it answers, for at most a minute (a slow machine takes long, never forever).
    fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(answer) = check() {
                return answer;
            }
            assert!(Instant::now() < deadline, "gave up after a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
