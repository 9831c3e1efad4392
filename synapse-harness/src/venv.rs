//! The prerequisites: a virtualenv holding the pinned Synapse from PyPI, and nginx.
//!
//! The virtualenv is made once per location and guarded by an exclusive `flock(2)` on a lock
//! file beside it, so parallel test processes never install twice and never use a half-made
//! one: a marker file written last says the install completed.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The Synapse release the harness runs (PyPI `matrix-synapse`).
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// Written into the virtualenv once the install completed and was checked.
const READY_MARKER: &str = ".synapse-harness-ready";

/// What a real-homeserver test needs, found and ready.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The virtualenv's Python, with `matrix-synapse==SYNAPSE_VERSION` importable.
    pub python: PathBuf,
    /// The nginx binary (Debian's package installs it as `/usr/sbin/nginx`).
    pub nginx: PathBuf,
}

/// Whether the real processes can run here.
#[derive(Debug, Clone)]
pub enum Availability {
    Ready(Tools),
    /// Why not; the caller prints it as its one skip line.
    Skip(String),
}

/// Where the virtualenv lives: `$SYNAPSE_VENV`, else `synapse-venv-<version>` in the Cargo
/// target directory (`$CARGO_TARGET_DIR`, else the workspace's `target/`).
pub fn venv_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SYNAPSE_VENV").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(format!("synapse-venv-{SYNAPSE_VERSION}"))
}

/// Finds nginx and python3, and makes the Synapse virtualenv if needed (this downloads the
/// pinned `matrix-synapse` and its dependencies from PyPI, nothing else, and prints one line).
/// The outcome is computed once per process.
///
/// A missing prerequisite is [`Availability::Skip`], or [`Error::Prerequisite`] when the `CI`
/// environment variable is set.
pub async fn prepare() -> Result<Availability, Error> {
    static OUTCOME: OnceLock<Result<Tools, String>> = OnceLock::new();
    if OUTCOME.get().is_none() {
        let found = tokio::task::spawn_blocking(find_or_install)
            .await
            .unwrap_or_else(|e| Err(format!("the preparation panicked: {e}")));
        // A concurrent caller may have set it first; both computed under the file lock.
        let _ = OUTCOME.set(found);
    }
    match OUTCOME.get() {
        Some(Ok(tools)) => Ok(Availability::Ready(tools.clone())),
        Some(Err(reason)) if std::env::var_os("CI").is_some() => {
            Err(Error::Prerequisite(reason.clone()))
        }
        Some(Err(reason)) => Ok(Availability::Skip(reason.clone())),
        None => unreachable!("set above"),
    }
}

fn find_or_install() -> Result<Tools, String> {
    let nginx = find_program("nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx"])
        .ok_or("nginx is not installed (Debian: apt-get install nginx)")?;
    let python = ensure_venv(&venv_path())?;
    Ok(Tools { python, nginx })
}

/// `name` on `PATH`, else the first existing fallback (sbin is often not on a user's PATH).
fn find_program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        fallbacks
            .iter()
            .map(PathBuf::from)
            .find(|candidate| candidate.is_file())
    })
}

/// An exclusive `flock(2)` on a file, released when dropped (or when the process dies, so a
/// crashed installer never leaves a stale lock behind).
struct FileLock {
    _file: File,
}

impl FileLock {
    fn exclusive(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            // SAFETY: `file` owns a valid open descriptor for the whole call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self { _file: file });
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Makes the virtualenv at `venv` unless a completed one is there; returns its Python.
fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let marker = venv.join(READY_MARKER);
    if marker.is_file() && python.is_file() {
        return Ok(python);
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let lock_path = venv.with_extension("lock");
    let _lock = FileLock::exclusive(&lock_path)
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another process may have finished while we waited for the lock.
    if marker.is_file() && python.is_file() {
        return Ok(python);
    }
    // A virtualenv made by someone else (e.g. `.ci/run`) with the right version is adopted.
    if python.is_file() && installed_version(&python).as_deref() == Some(SYNAPSE_VERSION) {
        write_marker(&marker)?;
        return Ok(python);
    }

    let python3 = find_program("python3", &[]).ok_or("python3 is not installed")?;
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .map_err(|e| format!("cannot remove the unfinished {}: {e}", venv.display()))?;
    }
    // The one line the brief asks for: installing takes about a minute.
    eprintln!(
        "synapse-harness: installing matrix-synapse=={SYNAPSE_VERSION} from PyPI into {} (about a minute)",
        venv.display()
    );
    run(Command::new(&python3).arg("-m").arg("venv").arg(venv))
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
    ]);
    // On a terminal (the playground's first `--homeserver synapse`), pip shows its progress
    // (each package, download bars) on the terminal; elsewhere (tests, CI logs) it stays quiet
    // and its output is kept for the error.
    let shown = if std::io::stderr().is_terminal() {
        pip.args(["--progress-bar", "on"]);
        run_shown(pip.arg(format!("matrix-synapse=={SYNAPSE_VERSION}")))
    } else {
        run(pip.args(["--quiet", &format!("matrix-synapse=={SYNAPSE_VERSION}")]))
    };
    shown.map_err(|e| format!("pip install matrix-synapse=={SYNAPSE_VERSION} failed: {e}"))?;
    match installed_version(&python) {
        Some(version) if version == SYNAPSE_VERSION => {}
        other => {
            return Err(format!(
                "the virtualenv holds Synapse {other:?}, not {SYNAPSE_VERSION}"
            ))
        }
    }
    write_marker(&marker)?;
    Ok(python)
}

fn write_marker(marker: &Path) -> Result<(), String> {
    std::fs::write(marker, SYNAPSE_VERSION)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))
}

/// The Synapse version installed for `python`, if any: the distribution's own metadata.
/// (`synapse.__version__` is no good: run inside a git checkout, such as this repository,
/// Synapse appends that checkout's branch and commit to it.)
fn installed_version(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, importlib.metadata as m; sys.stdout.write(m.version('matrix-synapse'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs a command to completion; on failure, the error holds the end of its output.
/// Runs `command` with its output on this process's stderr (so a terminal shows it).
fn run_shown(command: &mut Command) -> Result<(), String> {
    let status = command
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status} (its output is above)"))
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(format!(
        "{}: {}",
        output.status,
        crate::process::last_lines(&text, 20)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_between_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = FileLock::exclusive(&path).unwrap();
        let other = OpenOptions::new().write(true).open(&path).unwrap();
        // SAFETY: `other` owns a valid open descriptor.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "a second exclusive lock must not be granted");
        drop(held);
        // SAFETY: as above.
        let rc = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "released on drop");
    }

    #[test]
    fn a_missing_program_is_not_found() {
        assert_eq!(find_program("surely-no-such-program-here", &[]), None);
        assert_eq!(
            find_program("surely-no-such-program-here", &["/bin/sh"]),
            Some(PathBuf::from("/bin/sh"))
        );
    }
}
