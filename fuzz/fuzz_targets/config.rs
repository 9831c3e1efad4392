//! The configuration file: `provider::config::parse` on text (YAML) and an environment.
//! Input: the YAML text, then optionally a NUL byte and `NAME=value` lines for the environment.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// Relative `key_file` paths resolve here, where nothing exists: reading a file then fails
/// like a missing file does.
const BASE_DIR: &str = "/nonexistent/provider-fuzz";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok((config, _settings)) = provider::config::parse(yaml, env, Path::new(BASE_DIR)) else {
        return;
    };
    // An accepted configuration, written out, is accepted again and writes out the same
    // (what `provider config` tooling relies on when it rewrites a file).
    let written = serde_yaml_ng::to_string(&config).expect("a config serialises");
    let (again, _) = provider::config::parse(&written, Vec::new(), Path::new(BASE_DIR))
        .unwrap_or_else(|problems| panic!("written config refused: {problems:?}\n{written}"));
    assert_eq!(
        serde_yaml_ng::to_string(&again).expect("serialises"),
        written
    );
});
