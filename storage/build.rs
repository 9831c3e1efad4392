//! `sqlx::migrate!` embeds the migration files when this crate compiles, but Cargo does not
//! know that a file added to `migrations/` changes it: without this, an incremental build keeps
//! the old list and a new migration is silently left out of the binary.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
