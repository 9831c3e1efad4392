//! The `fake-homeserver` binary.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fake-homeserver");

#[test]
fn help_shows_the_options_and_an_example() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--server-name",
        "--provider-endpoint",
        "--secret",
        "--listen",
        "--public-base",
        "--proxy-login",
        "Example:",
    ] {
        assert!(help.contains(expected), "missing {expected} in:\n{help}");
    }
}

#[test]
fn missing_arguments_are_an_error() {
    let output = Command::new(BIN)
        .env_remove("FAKE_HOMESERVER_SERVER_NAME")
        .env_remove("FAKE_HOMESERVER_PROVIDER_ENDPOINT")
        .env_remove("FAKE_HOMESERVER_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--server-name"), "{stderr}");
}

#[test]
fn an_invalid_configuration_is_reported() {
    let output = Command::new(BIN)
        .args([
            "--server-name",
            "hs.test",
            "--provider-endpoint",
            "http://127.0.0.1:9/",
            "--secret",
            "",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("shared secret"), "{stderr}");
}
