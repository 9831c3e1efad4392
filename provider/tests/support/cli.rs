//! The `provider` binary run as a subprocess, the way an operator runs it (`tests/cli.rs`,
//! `tests/manage_cli.rs`): each test in its own temporary directory (the working directory of
//! every command), with the `PROVIDER…` and `RUST_LOG` variables of the test's own environment
//! removed.

use std::{
    io::{Read, Write as _},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

/// How long any one command may run before the test gives up on it (the binary waits up to 30 s
/// for a database connection).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(90);

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts the exit code and that nothing panicked, showing the whole output when not.
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "`{what}`: unexpected exit status\n{self:#?}"
        );
        self.no_panic(what)
    }

    pub fn no_panic(&self, what: &str) -> &Self {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "`{what}` panicked\n{self:#?}"
        );
        self
    }
}

/// Kills the process when dropped: a failing test never leaves one behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// Waits for the process to exit, up to `limit`; `None` when it is still running.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("poll the child process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A temporary directory to run the binary in.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).expect("write a file in the work directory");
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read a file in the work directory")
    }

    /// `provider ARGS…` in this directory, with a clean environment plus `env`.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provider"));
        command.args(args).current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("PROVIDER") || text == "RUST_LOG" {
                command.env_remove(&name);
            }
        }
        command.envs(env.iter().copied());
        command
    }

    /// Runs `provider ARGS…` to completion, capturing its output.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args, env);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        finish(command, &describe(args), None)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Runs `provider ARGS…` to completion with `stdin` as its input, capturing its output.
    pub fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = self.command(args, &[]);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        finish(command, &describe(args), Some(stdin))
    }

    /// `provider config generate ARGS… > FILE`; asserts it succeeded quietly.
    pub fn generate(&self, file: &str, args: &[&str]) {
        let mut all = vec!["config", "generate"];
        all.extend_from_slice(args);
        let mut command = self.command(&all, &[]);
        let out = std::fs::File::create(self.path(file)).expect("create the config file");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped());
        let what = format!("{} > {file}", describe(&all));
        let output = finish(command, &what, None);
        output.expect_code(0, &what);
        assert_eq!(output.stderr, "", "`{what}` wrote to stderr");
        assert!(
            self.read(file).contains("\nclients:\n"),
            "`{what}` wrote no configuration"
        );
    }
}

/// Runs `provider ARGS…` (with `stdin` as its input, when given) off the async runtime, where
/// the servers it talks to (a fake homeserver) run.
pub async fn run_blocking(dir: Arc<Workdir>, args: Vec<String>, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match stdin {
            Some(input) => dir.run_with_input(&args, &input),
            None => dir.run(&args),
        }
    })
    .await
    .expect("the command's thread")
}

pub fn describe(args: &[&str]) -> String {
    format!("provider {}", args.join(" "))
}

/// Spawns `command` (its stdout and/or stderr piped), writes `stdin` to its piped input when
/// given, reads what it writes, and waits for it.
fn finish(mut command: Command, what: &str, stdin: Option<&str>) -> Output {
    let mut child = KillOnDrop(command.spawn().expect("start the provider binary"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.0.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = child
        .wait_for_exit(COMMAND_LIMIT)
        .unwrap_or_else(|| panic!("`{what}` still runs after {COMMAND_LIMIT:?}"));
    drop(child);
    Output {
        code: status.code(),
        stdout: stdout.join().expect("read stdout"),
        stderr: stderr.join().expect("read stderr"),
    }
}
