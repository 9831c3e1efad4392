//! The raw argon2id rate of this machine, with the provider's default scheme (version 1: m =
//! 19456 KiB, t = 2, p = 1, 32-byte output; see `core::passwords`): one hashing thread per core,
//! each hashing as fast as it can for the given seconds. `scripts/bench.sh` compares the password
//! sign-in rate with it.
//!
//! ```sh
//! cargo run --release -p provider --example argon2_rate -- 10
//! ```
//! Prints `hashes_per_second=<rate> threads=<n> seconds=<s>`.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let params = Params::new(19_456, 2, 1, Some(32)).expect("valid argon2 parameters");
    let until = Duration::from_secs(seconds);
    let start = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let params = params.clone();
                s.spawn(move || {
                    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    let salt = [i as u8; 16];
                    let mut out = [0u8; 32];
                    let mut n = 0u64;
                    while start.elapsed() < until {
                        argon2
                            .hash_password_into(b"correct horse battery staple", &salt, &mut out)
                            .expect("argon2 hashes");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let total: u64 = counts.iter().sum();
    println!(
        "hashes_per_second={:.1} threads={threads} seconds={elapsed:.1}",
        total as f64 / elapsed
    );
}
