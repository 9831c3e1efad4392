//! The prerequisites: a virtualenv holding the pinned Synapse from PyPI (and its PostgreSQL
//! driver), and nginx.
//!
//! The virtualenv is made once per location and guarded by an exclusive `flock(2)` on a lock
//! file beside it, so parallel test processes never install twice and never use a half-made
//! one: a marker file written last, naming every pin ([`PINS`]), says the install completed.
//! `.ci/run` makes the same virtualenv with the same pins and marker (a test here checks that
//! its copy of the pins agrees).

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The Synapse release the harness runs (PyPI `matrix-synapse`).
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// Synapse's PostgreSQL driver (PyPI `psycopg2-binary`, `docs/postgres.md`), for Synapse on
/// PostgreSQL (`provider/tests/syn2mas_real.rs`).
pub const PSYCOPG2_VERSION: &str = "2.9.10";

/// Every PyPI distribution the virtualenv is made with, pinned: `(name, version)`.
pub const PINS: [(&str, &str); 2] = [
    ("matrix-synapse", SYNAPSE_VERSION),
    ("psycopg2-binary", PSYCOPG2_VERSION),
];

/// Written into the virtualenv once the install completed and was checked; it holds
/// [`marker_contents`], so a virtualenv made with other pins is not taken for ready.
const READY_MARKER: &str = ".synapse-harness-ready";

/// The ready marker's contents: one `name==version` line per pin.
fn marker_contents() -> String {
    PINS.iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect()
}

/// `name==version`, as pip is asked for it.
fn requirement((name, version): (&str, &str)) -> String {
    format!("{name}=={version}")
}

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
/// pinned `matrix-synapse`, `psycopg2-binary` and their dependencies from PyPI, nothing else,
/// and prints one line).
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
    let ready =
        || python.is_file() && std::fs::read_to_string(&marker).ok() == Some(marker_contents());
    if ready() {
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
    if ready() {
        return Ok(python);
    }
    // A virtualenv made by someone else (e.g. `.ci/run`, or this harness before a pin was
    // added) with the right Synapse is adopted, and given the pins it lacks.
    if python.is_file() && installed_version(&python, PINS[0].0).as_deref() == Some(PINS[0].1) {
        let missing: Vec<String> = PINS
            .into_iter()
            .filter(|(name, version)| installed_version(&python, name).as_deref() != Some(*version))
            .map(requirement)
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "synapse-harness: installing {} from PyPI into {}",
                missing.join(" "),
                venv.display()
            );
            pip_install(&python, &missing)?;
        }
        return checked(&python, &marker);
    }

    let python3 = find_program("python3", &[]).ok_or("python3 is not installed")?;
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .map_err(|e| format!("cannot remove the unfinished {}: {e}", venv.display()))?;
    }
    let all: Vec<String> = PINS.into_iter().map(requirement).collect();
    // The one line the brief asks for: installing takes about a minute.
    eprintln!(
        "synapse-harness: installing {} from PyPI into {} (about a minute)",
        all.join(" "),
        venv.display()
    );
    run(Command::new(&python3).arg("-m").arg("venv").arg(venv))
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    pip_install(&python, &all)?;
    checked(&python, &marker)
}

/// `pip install` of `requirements` into the virtualenv of `python`.
fn pip_install(python: &Path, requirements: &[String]) -> Result<(), String> {
    let mut pip = Command::new(python);
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
        run_shown(pip.args(requirements))
    } else {
        run(pip.arg("--quiet").args(requirements))
    };
    shown.map_err(|e| format!("pip install {} failed: {e}", requirements.join(" ")))
}

/// Checks that every pin is installed as pinned, then writes the ready marker.
fn checked(python: &Path, marker: &Path) -> Result<PathBuf, String> {
    for (name, version) in PINS {
        let installed = installed_version(python, name);
        if installed.as_deref() != Some(version) {
            return Err(format!(
                "the virtualenv holds {name} {installed:?}, not {version}"
            ));
        }
    }
    std::fs::write(marker, marker_contents())
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(python.to_path_buf())
}

/// The version of the distribution `name` installed for `python`, if any: the distribution's
/// own metadata. (For Synapse, `synapse.__version__` is no good: run inside a git checkout,
/// such as this repository, Synapse appends that checkout's branch and commit to it.)
fn installed_version(python: &Path, name: &str) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, importlib.metadata as m; sys.stdout.write(m.version(sys.argv[1]))",
            name,
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

    /// `.ci/run` makes the same virtualenv before the tests run: its copy of the pins must be
    /// these, and its marker the one [`ensure_venv`] takes for ready.
    #[test]
    fn ci_run_installs_the_same_pins() {
        let script =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run"))
                .expect(".ci/run");
        let assigned = |variable: &str| {
            script
                .lines()
                .find_map(|line| line.trim().strip_prefix(&format!("{variable}=")))
                .map(|value| value.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!(".ci/run sets no {variable}"))
        };
        assert_eq!(assigned("SYNAPSE_VERSION"), SYNAPSE_VERSION);
        assert_eq!(assigned("PSYCOPG2_VERSION"), PSYCOPG2_VERSION);
        assert_eq!(
            marker_contents(),
            "matrix-synapse==1.163.2\npsycopg2-binary==2.9.10\n",
            "the marker .ci/run writes (printf 'matrix-synapse==%s\\npsycopg2-binary==%s\\n')"
        );
        assert!(
            script.contains(r"printf 'matrix-synapse==%s\npsycopg2-binary==%s\n' \"),
            ".ci/run writes another ready marker"
        );
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
