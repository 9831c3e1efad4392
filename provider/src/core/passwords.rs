//! Password hashing, verification with transparent upgrades, and the password policy.
//!
//! Each stored hash carries a scheme version (the `version` column of
//! [`crate::storage::Password`]); the configured [`PasswordConfig::schemes`] say what each version
//! means. The highest version hashes new passwords, and must be argon2id; lower versions only
//! verify. By default:
//!
//! - version 0: bcrypt (`$2a$`, `$2b$`, `$2y$`), for hashes imported from another system (Synapse
//!   stores bcrypt), verified and then replaced;
//! - version 1: argon2id with m = 19456 KiB (19 MiB), t = 2, p = 1, the first configuration
//!   recommended by the OWASP Password Storage Cheat Sheet
//!   (<https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html>), a
//!   16-byte random salt and a 32-byte output, stored as a PHC string
//!   (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! A successful [`PasswordHasher::verify`] of a hash stored with an older version, or with
//! argon2 parameters weaker than the current scheme's, comes with a new hash to store in its
//! place ([`Verified::Match`]).
//!
//! Hashing is slow on purpose, so it never runs on the async workers: it runs on the process's
//! hashing threads ([`HashingPool`]), one per core, in the order the requests came (a burst of
//! logins queues instead of allocating 19 MiB per request). Those threads run at the lowest
//! scheduling priority (nice 19): a sign-in storm uses the CPU nothing else wants, and an
//! introspection or a token request arriving meanwhile runs at once instead of waiting for a
//! hash's time slice (issue 16: introspection's p99 during a storm). Each thread keeps argon2's
//! memory between the hashes of a burst and gives it back once idle ([`Scratch`]).
//! Comparisons are constant-time (the crates' own, or [`password_hash::Output`]'s); hashes are
//! never compared with `==` here.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    panic::AssertUnwindSafe,
    sync::{Arc, Condvar, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use argon2::{
    password_hash::{self, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use rand::{rngs::StdRng, RngCore};

use crate::clock::RngSource;

/// The salt of new argon2id hashes, in bytes (RFC 9106 §3.1 recommends 16).
const SALT_LEN: usize = 16;
/// The output of new argon2id hashes, in bytes; a stored hash with a shorter one is upgraded.
const OUTPUT_LEN: usize = 32;

/// A stored argon2 hash whose memory cost exceeds both this (1 GiB, in KiB) and the current
/// scheme's is refused rather than verified: the allocation could abort the process.
const MAX_STORED_M_COST_KIB: u32 = 1 << 20;
/// Likewise for the number of passes.
const MAX_STORED_T_COST: u32 = 64;
/// Likewise for an imported bcrypt hash's cost (2^18 rounds take seconds; 31 would take hours).
const MAX_STORED_BCRYPT_COST: u32 = 18;

/// The cost parameters of argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory, in KiB (the `m` of the PHC string).
    pub m_cost_kib: u32,
    /// Passes over the memory (`t`).
    pub t_cost: u32,
    /// Lanes (`p`).
    pub p_cost: u32,
}

impl Argon2Params {
    /// OWASP Password Storage Cheat Sheet, argon2id: "a minimum configuration of 19 MiB of
    /// memory, an iteration count of 2, and 1 degree of parallelism".
    pub const OWASP: Self = Self {
        m_cost_kib: 19_456,
        t_cost: 2,
        p_cost: 1,
    };
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// What a scheme version means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// bcrypt hashes imported from another system (`$2a$`, `$2b$`, `$2y$`; not the buggy `$2x$`).
    /// Verify only: such hashes are replaced by the current scheme on the next successful login.
    /// bcrypt reads at most 72 bytes of a password, as the systems that made them did.
    Bcrypt,
    /// argon2id with these parameters for new hashes. Verification reads the parameters from the
    /// PHC string itself, so a hash made with other parameters still verifies.
    Argon2id(Argon2Params),
}

/// The password settings: hashing schemes by version and the policy for new passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordConfig {
    /// Schemes by version. The highest version hashes new passwords (it must be
    /// [`Scheme::Argon2id`]); the others verify stored hashes, which are then upgraded. A stored
    /// hash whose version is not listed can't be verified.
    pub schemes: BTreeMap<i32, Scheme>,
    /// The policy new passwords must follow.
    pub policy: PasswordPolicy,
    /// Appended to the password before it is checked against a [`Scheme::Bcrypt`] hash: the
    /// pepper the importing system hashed with (Synapse's `password_config.pepper`:
    /// `bcrypt.checkpw(password + pepper, hash)` in `synapse/handlers/auth.py`). Never used for
    /// new hashes: the upgraded argon2id hash is of the password alone.
    pub bcrypt_pepper: Option<String>,
}

impl Default for PasswordConfig {
    /// Version 0 bcrypt (imports), version 1 argon2id with the OWASP parameters; 8 to 1024.
    fn default() -> Self {
        Self {
            schemes: BTreeMap::from([
                (0, Scheme::Bcrypt),
                (1, Scheme::Argon2id(Argon2Params::OWASP)),
            ]),
            policy: PasswordPolicy::default(),
            bcrypt_pepper: None,
        }
    }
}

/// The rules for a new password: its length, and no control characters. No composition rules
/// (NIST SP 800-63B §3.1.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The minimum length, in characters (Unicode scalar values), at least 1.
    pub min_length: usize,
    /// The maximum length, in bytes of UTF-8: it bounds the cost of hashing.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 1024,
        }
    }
}

/// Why a new password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the password is too short: it must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password is too long: it must be at most {max} bytes long")]
    TooLong { max: usize },
    #[error(
        "the password holds a control character (a tab, a line break or another invisible \
         character), which can't be typed at sign-in"
    )]
    ControlCharacter,
}

impl PasswordPolicy {
    /// Checks a new password (at registration or change, before [`PasswordHasher::hash`]).
    pub fn check(&self, password: &str) -> Result<(), PolicyError> {
        self.check_unskippable(password)?;
        if password.chars().count() < self.min_length {
            return Err(PolicyError::TooShort {
                min: self.min_length,
            });
        }
        Ok(())
    }

    /// The rules no caller may skip, not even an operator setting a password knowingly
    /// (`--ignore-policy`): the maximum length, which bounds the hashing work, and no control
    /// characters (Unicode `Cc`: C0, DEL, C1). NIST SP 800-63B §5.1.1.2 lets a verifier take
    /// every printable character and space; a control character is neither, a password field
    /// can't take one (a tab moves on, a line break submits), and a password nobody can type
    /// is one nobody can sign in with. Imported hashes (syn2mas) are not new passwords: they
    /// are never checked, and sign in whatever they hold.
    fn check_unskippable(&self, password: &str) -> Result<(), PolicyError> {
        if password.len() > self.max_length {
            return Err(PolicyError::TooLong {
                max: self.max_length,
            });
        }
        if password.chars().any(char::is_control) {
            return Err(PolicyError::ControlCharacter);
        }
        Ok(())
    }
}

/// Why a [`PasswordConfig`] can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordConfigError {
    #[error("no password hashing scheme is configured")]
    NoScheme,
    #[error("password scheme version {0} is bcrypt, but the highest version hashes new passwords and must be argon2id")]
    CurrentIsBcrypt(i32),
    #[error("password scheme version {version}: invalid argon2id parameters: {reason}")]
    InvalidArgon2Params { version: i32, reason: String },
    #[error("the password policy needs 1 <= min_length <= max_length, got min_length {min} and max_length {max}")]
    InvalidPolicy { min: usize, max: usize },
}

/// Why a password could not be hashed or verified. The messages never include a password or a
/// stored hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the stored password hash has version {0}, which no configured scheme has")]
    UnknownVersion(i32),
    #[error("the stored password hash (version {version}) is unusable: {reason}")]
    InvalidHash { version: i32, reason: String },
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the password hashing task did not complete")]
    TaskFailed,
}

/// The outcome of [`PasswordHasher::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Verified {
    /// Wrong password.
    Mismatch,
    /// Right password. `upgrade` is `Some((version, hashed_password))` when the stored hash was
    /// made by an older scheme version or with weaker argon2 parameters than the current scheme:
    /// the caller should store this new hash of the same password (a new `Password` row with
    /// `upgraded_from_id`). A failure to store it is harmless: the next login upgrades again.
    Match { upgrade: Option<(i32, String)> },
}

impl Verified {
    pub fn is_match(&self) -> bool {
        matches!(self, Verified::Match { .. })
    }
}

/// Hashes and verifies passwords by the configured schemes. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    schemes: Arc<BTreeMap<i32, Scheme>>,
    policy: PasswordPolicy,
    current_version: i32,
    current_params: Params,
    bcrypt_pepper: Option<Arc<str>>,
    rng: Arc<dyn RngSource>,
}

/// Gives freed memory back to the system. glibc raises its mmap threshold after the first
/// 19 MiB block is freed, so later blocks come from per-thread arenas that keep them: a burst of
/// logins measured 367 MiB resident long after it ended. Trimming once a hashing thread has let
/// its memory go brings it back to the idle figure.
fn release_hashing_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the system; it
    // touches no memory in use and takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many hashes run at once: one per core (hashing is CPU-bound, so more at once only adds
/// memory, 19 MiB each with argon2id v1, and latency).
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// The nice value of the hashing threads: the lowest priority of the normal scheduler, so any
/// request's thread (nice 0) that wakes up takes the core from a hash at once.
const HASHING_NICE: libc::c_int = 19;

/// How long an idle hashing thread keeps its memory for the next hash of a burst.
const KEEP_MEMORY_FOR: Duration = Duration::from_secs(2);

/// The memory of one hashing thread: argon2's blocks, kept between the hashes of a burst (no
/// 19 MiB allocation, page faults and zeroing per hash: argon2 overwrites every block before it
/// reads it, RFC 9106 §3.2), and given back once the thread has been idle [`KEEP_MEMORY_FOR`].
pub struct Scratch(Vec<Block>);

impl Scratch {
    /// At least the blocks `params` needs.
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }

    fn is_held(&self) -> bool {
        !self.0.is_empty()
    }

    fn release(&mut self) {
        self.0 = Vec::new();
        release_hashing_memory();
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The process's hashing threads, shared by every [`PasswordHasher`]: one per core, started on
/// the first hash, taking jobs in the order they came.
struct HashingPool {
    queue: Arc<(Mutex<VecDeque<Job>>, Condvar)>,
    threads: usize,
}

impl HashingPool {
    fn get() -> &'static Self {
        static POOL: OnceLock<HashingPool> = OnceLock::new();
        POOL.get_or_init(|| Self::start(hashing_slots()))
    }

    fn start(threads: usize) -> Self {
        let queue = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
        let started = (0..threads)
            .filter(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("password-hash-{i}"))
                    .spawn(move || Self::work(&queue))
                    .map_err(
                        |e| tracing::error!(error = %e, "can't start a password hashing thread"),
                    )
                    .is_ok()
            })
            .count();
        Self {
            queue,
            threads: started,
        }
    }

    fn submit(&self, job: Job) -> Result<(), PasswordError> {
        if self.threads == 0 {
            return Err(PasswordError::TaskFailed);
        }
        let (jobs, ready) = &*self.queue;
        jobs.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        ready.notify_one();
        Ok(())
    }

    /// One hashing thread: at the lowest priority, taking jobs until the process ends.
    fn work(queue: &(Mutex<VecDeque<Job>>, Condvar)) {
        lower_thread_priority();
        let (jobs, ready) = queue;
        let mut scratch = Scratch(Vec::new());
        loop {
            let mut waiting = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let job = loop {
                if let Some(job) = waiting.pop_front() {
                    break Some(job);
                }
                if !scratch.is_held() {
                    waiting = ready.wait(waiting).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                let (guard, timeout) = ready
                    .wait_timeout(waiting, KEEP_MEMORY_FOR)
                    .unwrap_or_else(PoisonError::into_inner);
                waiting = guard;
                if timeout.timed_out() && waiting.is_empty() {
                    break None;
                }
            };
            drop(waiting);
            match job {
                // A panic in a job (none is expected) drops its answer (the waiter gets
                // `TaskFailed`) and leaves the thread working.
                Some(job) => {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut scratch)));
                }
                None => scratch.release(),
            }
        }
    }
}

/// Lowers the calling thread's priority to [`HASHING_NICE`] (Linux: nice values are per
/// thread). Best effort: a failure leaves it at the normal priority.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only changes the scheduling priority of the thread `gettid` names,
        // the calling one; it reads and writes no memory of ours.
        let result = unsafe {
            libc::setpriority(
                libc::PRIO_PROCESS,
                libc::gettid() as libc::id_t,
                HASHING_NICE,
            )
        };
        if result != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "can't lower the priority of a password hashing thread"
            );
        }
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("schemes", &self.schemes)
            .field("policy", &self.policy)
            .field("current_version", &self.current_version)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Checks the configuration; salts come from `rng` (the application's [`RngSource`]).
    pub fn new(
        config: PasswordConfig,
        rng: Arc<dyn RngSource>,
    ) -> Result<Self, PasswordConfigError> {
        let PasswordConfig {
            schemes,
            policy,
            bcrypt_pepper,
        } = config;
        if policy.min_length == 0 || policy.min_length > policy.max_length {
            return Err(PasswordConfigError::InvalidPolicy {
                min: policy.min_length,
                max: policy.max_length,
            });
        }
        for (&version, scheme) in &schemes {
            if let Scheme::Argon2id(params) = scheme {
                argon2_params(params).map_err(|e| PasswordConfigError::InvalidArgon2Params {
                    version,
                    reason: e.to_string(),
                })?;
            }
        }
        let (&current_version, current) = schemes
            .last_key_value()
            .ok_or(PasswordConfigError::NoScheme)?;
        let current_params = match current {
            Scheme::Argon2id(params) => {
                argon2_params(params).map_err(|e| PasswordConfigError::InvalidArgon2Params {
                    version: current_version,
                    reason: e.to_string(),
                })?
            }
            Scheme::Bcrypt => return Err(PasswordConfigError::CurrentIsBcrypt(current_version)),
        };
        Ok(Self {
            schemes: Arc::new(schemes),
            policy,
            current_version,
            current_params,
            bcrypt_pepper: bcrypt_pepper.map(Arc::from),
            rng,
        })
    }

    /// Runs CPU-bound hashing work on a hashing thread ([`HashingPool`]) in its turn. A job
    /// whose caller has gone (the request was cancelled) is skipped when its turn comes.
    async fn run_hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        HashingPool::get().submit(Box::new(move |scratch| {
            if !answer.is_closed() {
                let _ = answer.send(work(scratch));
            }
        }))?;
        answered.await.map_err(|_| PasswordError::TaskFailed)
    }

    /// The version new hashes are stored with.
    pub fn current_version(&self) -> i32 {
        self.current_version
    }

    /// The policy for new passwords.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// Checks a new password against the configured [`PasswordPolicy`].
    pub fn check_policy(&self, password: &str) -> Result<(), PolicyError> {
        self.policy.check(password)
    }

    /// Hashes a new password with the current scheme: `(version, PHC string)` to store. Refuses a
    /// password longer than the policy's maximum (to bound the work) or holding a control
    /// character (the rules nobody skips); the rest of the policy is for the caller to check
    /// ([`Self::check_policy`]) where the user chooses the password.
    pub async fn hash(&self, password: String) -> Result<(i32, String), PasswordError> {
        self.policy.check_unskippable(&password)?;
        let params = self.current_params.clone();
        let mut rng = self.rng.rng();
        let hash = self
            .run_hashing(move |scratch| {
                hash_argon2id(params, &mut rng, password.as_bytes(), scratch)
            })
            .await??;
        Ok((self.current_version, hash))
    }

    /// Checks `password` against a stored hash made by scheme `version`. A password longer than
    /// the policy's maximum is a [`Verified::Mismatch`] without any hashing. Errors mean the
    /// stored hash can't be used (unknown version, not of its scheme's format, out-of-range
    /// parameters), never that the password is wrong.
    pub async fn verify(
        &self,
        version: i32,
        stored_hash: &str,
        password: String,
    ) -> Result<Verified, PasswordError> {
        let scheme = *self
            .schemes
            .get(&version)
            .ok_or(PasswordError::UnknownVersion(version))?;
        if password.len() > self.policy.max_length {
            return Ok(Verified::Mismatch);
        }
        let stored_hash = stored_hash.to_owned();
        let current_version = self.current_version;
        let current_params = self.current_params.clone();
        let pepper = self.bcrypt_pepper.clone();
        let mut rng = self.rng.rng();
        self.run_hashing(move |scratch| {
            let invalid = |reason: &str| PasswordError::InvalidHash {
                version,
                reason: reason.to_owned(),
            };
            let (matched, weaker) = match scheme {
                Scheme::Bcrypt => {
                    let mut peppered = password.as_bytes().to_vec();
                    peppered.extend_from_slice(pepper.as_deref().unwrap_or("").as_bytes());
                    (
                        verify_bcrypt(&stored_hash, &peppered).map_err(invalid)?,
                        true,
                    )
                }
                Scheme::Argon2id(_) => {
                    verify_argon2(&stored_hash, password.as_bytes(), &current_params, scratch)
                        .map_err(invalid)?
                }
            };
            if !matched {
                return Ok(Verified::Mismatch);
            }
            let upgrade = if version < current_version || weaker {
                let new_hash =
                    hash_argon2id(current_params, &mut rng, password.as_bytes(), scratch)?;
                Some((current_version, new_hash))
            } else {
                None
            };
            Ok(Verified::Match { upgrade })
        })
        .await?
    }
}

fn argon2_params(params: &Argon2Params) -> Result<Params, argon2::Error> {
    Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(OUTPUT_LEN),
    )
}

/// A new argon2id (v=19) PHC string with a fresh random salt, computed in the thread's
/// `scratch` memory. CPU-bound: hashing threads only.
fn hash_argon2id(
    params: Params,
    rng: &mut StdRng,
    password: &[u8],
    scratch: &mut Scratch,
) -> Result<String, PasswordError> {
    let failed = |e: &dyn fmt::Display| PasswordError::Hashing(e.to_string());
    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    let mut output = [0u8; OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2
        .hash_password_into_with_memory(password, &salt, &mut output, scratch.blocks(&params))
        .map_err(|e| failed(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(|e| failed(&e))?),
    }
    .to_string();
    Ok(phc)
}

/// Checks a password against an argon2 PHC string with the parameters it carries: whether it
/// matched, and whether the hash is weaker than `current` (another argon2 variant or version, less
/// memory, fewer passes, a shorter output). CPU-bound: hashing threads only.
fn verify_argon2(
    stored: &str,
    password: &[u8],
    current: &Params,
    scratch: &mut Scratch,
) -> Result<(bool, bool), &'static str> {
    let hash = PasswordHash::new(stored).map_err(|_| "not a PHC string (expected $argon2id$…)")?;
    let algorithm = Algorithm::try_from(hash.algorithm)
        .map_err(|_| "not an argon2 hash (expected $argon2id$…)")?;
    let params = Params::try_from(&hash).map_err(|_| "invalid argon2 parameters")?;
    let output_len = match (&hash.salt, &hash.hash) {
        (Some(_), Some(output)) => output.len(),
        _ => return Err("the PHC string has no salt or no hash"),
    };
    if params.m_cost() > MAX_STORED_M_COST_KIB.max(current.m_cost())
        || params.t_cost() > MAX_STORED_T_COST.max(current.t_cost())
    {
        return Err("argon2 parameters too costly to verify");
    }
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| "unknown argon2 version")?;
    let weaker = algorithm != Algorithm::Argon2id
        || version != Some(Version::V0x13)
        || params.m_cost() < current.m_cost()
        || params.t_cost() < current.t_cost()
        || output_len < OUTPUT_LEN;
    // Recomputed with the PHC string's own algorithm, version, parameters and salt, in the
    // thread's memory, and compared in constant time (`Output`'s equality), as the crate's own
    // verifier does.
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err("the PHC string has no salt or no hash");
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|_| "the argon2 salt is not valid base64")?;
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params.clone());
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password, salt, out, scratch.blocks(&params))
            .map_err(password_hash::Error::from)
    })
    .map_err(|_| "the argon2 hash could not be recomputed")?;
    Ok((computed == *expected, weaker))
}

/// Checks a password against an imported bcrypt hash. CPU-bound: hashing threads only.
fn verify_bcrypt(stored: &str, password: &[u8]) -> Result<bool, &'static str> {
    // `$2x$` is refused: it marks hashes of a buggy implementation this crate does not reproduce.
    let prefix = stored.get(..4);
    if !matches!(prefix, Some("$2a$" | "$2b$" | "$2y$")) {
        return Err("not a bcrypt hash (expected $2a$, $2b$ or $2y$)");
    }
    let parts: bcrypt::HashParts = stored
        .parse()
        .map_err(|_| "malformed bcrypt hash (expected 60 characters: $2b$<cost>$<salt+hash>)")?;
    if parts.get_cost() > MAX_STORED_BCRYPT_COST {
        return Err("bcrypt cost too high to verify");
    }
    // Constant-time comparison inside the crate.
    bcrypt::verify(password, stored).map_err(|_| "invalid bcrypt hash")
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use crate::clock::SeededRngSource;

    use super::*;

    /// Cheap parameters so tests are fast; the OWASP default is checked by its values only.
    const CHEAP: Argon2Params = Argon2Params {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn config(schemes: &[(i32, Scheme)]) -> PasswordConfig {
        PasswordConfig {
            schemes: schemes.iter().copied().collect(),
            policy: PasswordPolicy::default(),
            bcrypt_pepper: None,
        }
    }

    fn hasher(schemes: &[(i32, Scheme)]) -> PasswordHasher {
        PasswordHasher::new(config(schemes), Arc::new(SeededRngSource::new(5))).unwrap()
    }

    fn cheap() -> PasswordHasher {
        hasher(&[(0, Scheme::Bcrypt), (1, Scheme::Argon2id(CHEAP))])
    }

    fn bcrypt_hash(password: &str, version: bcrypt::Version) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .unwrap()
            .format_for_version(version)
    }

    #[test]
    fn the_default_is_owasp_argon2id_with_bcrypt_imports() {
        let config = PasswordConfig::default();
        assert_eq!(
            Argon2Params::default(),
            Argon2Params {
                m_cost_kib: 19_456,
                t_cost: 2,
                p_cost: 1
            }
        );
        assert_eq!(
            config.schemes.into_iter().collect::<Vec<_>>(),
            [
                (0, Scheme::Bcrypt),
                (1, Scheme::Argon2id(Argon2Params::OWASP))
            ]
        );
        assert_eq!(
            config.policy,
            PasswordPolicy {
                min_length: 8,
                max_length: 1024
            }
        );
        let hasher =
            PasswordHasher::new(PasswordConfig::default(), Arc::new(SeededRngSource::new(1)))
                .unwrap();
        assert_eq!(hasher.current_version(), 1);
        assert_eq!(hasher.current_params.m_cost(), 19_456);
        assert_eq!(hasher.current_params.t_cost(), 2);
        assert_eq!(hasher.current_params.p_cost(), 1);
        assert_eq!(hasher.current_params.output_len(), Some(32));
    }

    #[test]
    fn invalid_configurations() {
        let rng = || Arc::new(SeededRngSource::new(1));
        let new = |schemes: &[(i32, Scheme)]| PasswordHasher::new(config(schemes), rng());
        assert_eq!(new(&[]).unwrap_err(), PasswordConfigError::NoScheme);
        assert_eq!(
            new(&[(1, Scheme::Argon2id(CHEAP)), (2, Scheme::Bcrypt)]).unwrap_err(),
            PasswordConfigError::CurrentIsBcrypt(2)
        );
        let too_little_memory = Argon2Params {
            m_cost_kib: 1,
            ..CHEAP
        };
        assert!(matches!(
            new(&[
                (0, Scheme::Argon2id(too_little_memory)),
                (1, Scheme::Argon2id(CHEAP))
            ]),
            Err(PasswordConfigError::InvalidArgon2Params { version: 0, .. })
        ));
        for (min, max) in [(0, 10), (11, 10)] {
            let config = PasswordConfig {
                policy: PasswordPolicy {
                    min_length: min,
                    max_length: max,
                },
                ..PasswordConfig::default()
            };
            assert_eq!(
                PasswordHasher::new(config, rng()).unwrap_err(),
                PasswordConfigError::InvalidPolicy { min, max }
            );
        }
    }

    #[test]
    fn policy() {
        let hasher = cheap();
        assert_eq!(
            hasher.check_policy(""),
            Err(PolicyError::TooShort { min: 8 })
        );
        assert_eq!(
            hasher.check_policy("1234567"),
            Err(PolicyError::TooShort { min: 8 })
        );
        assert_eq!(hasher.check_policy("12345678"), Ok(()));
        // Characters, not bytes: 8 two-byte characters are enough, 7 are not.
        assert_eq!(hasher.check_policy("éééééééé"), Ok(()));
        assert_eq!(
            hasher.check_policy("ééééééé"),
            Err(PolicyError::TooShort { min: 8 })
        );
        assert_eq!(hasher.check_policy(&"x".repeat(1024)), Ok(()));
        assert_eq!(
            hasher.check_policy(&"x".repeat(1025)),
            Err(PolicyError::TooLong { max: 1024 })
        );
        // 513 two-byte characters: 1026 bytes.
        assert_eq!(
            hasher.check_policy(&"é".repeat(513)),
            Err(PolicyError::TooLong { max: 1024 })
        );
        assert_eq!(
            PolicyError::TooShort { min: 8 }.to_string(),
            "the password is too short: it must be at least 8 characters long"
        );
        let custom = PasswordPolicy {
            min_length: 12,
            max_length: 64,
        };
        assert_eq!(
            custom.check("12345678"),
            Err(PolicyError::TooShort { min: 12 })
        );
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = cheap();
        let (version, hash) = hasher.hash("correct horse".into()).await.unwrap();
        assert_eq!(version, 1);
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            hasher.verify(1, &hash, "correct horse".into()).await,
            Ok(Verified::Match { upgrade: None })
        );
        assert_eq!(
            hasher.verify(1, &hash, "correct horsE".into()).await,
            Ok(Verified::Mismatch)
        );
        assert_eq!(
            hasher.verify(1, &hash, String::new()).await,
            Ok(Verified::Mismatch)
        );
        // A fresh salt each time.
        let (_, again) = hasher.hash("correct horse".into()).await.unwrap();
        assert_ne!(hash, again);
    }

    /// The hashes computed in the hashing threads' kept memory are the crate's own: ours verify
    /// with the crate's verifier, the crate's (other memory sizes, one after the other in the
    /// same thread's memory, an argon2i and a v=16 one among them) verify with ours, and a
    /// wrong password never matches.
    #[tokio::test]
    async fn kept_memory_hashes_are_the_crates_own() {
        let hasher = cheap();
        let (_, ours) = hasher.hash("correct horse".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert_eq!(
            Argon2::default().verify_password(b"correct horse", &parsed),
            Ok(())
        );
        for (algorithm, version, m_cost) in [
            (Algorithm::Argon2id, Version::V0x13, 256),
            (Algorithm::Argon2id, Version::V0x13, 32),
            (Algorithm::Argon2i, Version::V0x13, 128),
            (Algorithm::Argon2id, Version::V0x10, 64),
        ] {
            let params = Params::new(m_cost, 1, 1, Some(32)).unwrap();
            let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
            let theirs = Argon2::new(algorithm, version, params)
                .hash_password(b"battery staple", &salt)
                .unwrap()
                .to_string();
            for _ in 0..2 {
                assert!(matches!(
                    hasher.verify(1, &theirs, "battery staple".into()).await,
                    Ok(Verified::Match { .. })
                ));
                assert_eq!(
                    hasher.verify(1, &theirs, "battery stapler".into()).await,
                    Ok(Verified::Mismatch)
                );
            }
        }
    }

    /// Hashing runs at the lowest priority (nice 19), so requests that arrive during a sign-in
    /// storm are not kept waiting behind hashes (issue 16).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_lowest_priority() {
        let hasher = cheap();
        let nice = hasher
            .run_hashing(|_| {
                // SAFETY: getpriority reads the calling thread's nice value; no memory of ours.
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
            })
            .await
            .unwrap();
        assert_eq!(nice, HASHING_NICE);
    }

    /// A thread's memory grows to what a hash needs and stays for the next one; released, it is
    /// gone.
    #[test]
    fn scratch_memory_is_kept_until_released() {
        let mut scratch = Scratch(Vec::new());
        let small = Params::new(64, 1, 1, None).unwrap();
        let big = Params::new(256, 1, 1, None).unwrap();
        assert_eq!(scratch.blocks(&small).len(), small.block_count());
        assert_eq!(scratch.blocks(&big).len(), big.block_count());
        assert_eq!(scratch.blocks(&small).len(), small.block_count());
        assert_eq!(scratch.0.len(), big.block_count());
        assert!(scratch.is_held());
        scratch.release();
        assert!(!scratch.is_held());
        assert_eq!(scratch.0.capacity(), 0);
    }

    /// A password with a control character can't be typed at sign-in: no new one has it, not
    /// even one an operator sets knowingly; a stored one (imported) still verifies.
    #[tokio::test]
    async fn control_characters() {
        let hasher = cheap();
        for c in ['\0', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}'] {
            let password = format!("long enough{c}pass");
            assert_eq!(
                hasher.check_policy(&password),
                Err(PolicyError::ControlCharacter),
                "{c:?}"
            );
            assert_eq!(
                hasher.hash(password).await,
                Err(PasswordError::Policy(PolicyError::ControlCharacter)),
                "{c:?}"
            );
        }
        assert!(PolicyError::ControlCharacter
            .to_string()
            .contains("control character"));
        // Spaces and other printable characters are fine (NIST SP 800-63B §5.1.1.2).
        assert_eq!(hasher.check_policy("  correct horse ✓ \u{a0}"), Ok(()));
        let imported = bcrypt_hash("tab\there", bcrypt::Version::TwoB);
        assert!(hasher
            .verify(0, &imported, "tab\there".into())
            .await
            .unwrap()
            .is_match());
    }

    #[tokio::test]
    async fn salts_come_from_the_injected_rng() {
        let (_, a) = cheap().hash("pw".into()).await.unwrap();
        let (_, b) = cheap().hash("pw".into()).await.unwrap();
        assert_eq!(a, b, "same seed, same salt");
    }

    #[tokio::test]
    async fn too_long_passwords() {
        let hasher = cheap();
        assert_eq!(
            hasher.hash("x".repeat(1025)).await,
            Err(PasswordError::Policy(PolicyError::TooLong { max: 1024 }))
        );
        let (_, hash) = hasher.hash("x".repeat(1024)).await.unwrap();
        assert!(hasher
            .verify(1, &hash, "x".repeat(1024))
            .await
            .unwrap()
            .is_match());
        assert_eq!(
            hasher.verify(1, &hash, "x".repeat(1025)).await,
            Ok(Verified::Mismatch)
        );
    }

    #[tokio::test]
    async fn imported_bcrypt_verifies_and_upgrades_to_argon2id() {
        let hasher = cheap();
        for variant in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let imported = bcrypt_hash("hunter2hunter2", variant);
            assert_eq!(
                hasher.verify(0, &imported, "hunter2hunter3".into()).await,
                Ok(Verified::Mismatch)
            );
            let Ok(Verified::Match {
                upgrade: Some((version, upgraded)),
            }) = hasher.verify(0, &imported, "hunter2hunter2".into()).await
            else {
                panic!("a bcrypt hash must verify and ask for an upgrade ({imported})");
            };
            assert_eq!(version, 1);
            assert!(upgraded.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
            assert_eq!(
                hasher.verify(1, &upgraded, "hunter2hunter2".into()).await,
                Ok(Verified::Match { upgrade: None })
            );
        }
    }

    #[tokio::test]
    async fn bcrypt_made_elsewhere() {
        // A `$2b$` hash of "password" at cost 4 with a fixed salt, produced by the bcrypt crate
        // with its raw salt [7; 16] (the same layout OpenBSD, PyPI bcrypt and Synapse write).
        let imported = bcrypt_hash("password", bcrypt::Version::TwoB);
        assert_eq!(imported.len(), 60);
        assert!(imported.starts_with("$2b$04$"));
        assert!(cheap()
            .verify(0, &imported, "password".into())
            .await
            .unwrap()
            .is_match());
    }

    #[tokio::test]
    async fn a_peppered_bcrypt_hash_needs_the_pepper_and_upgrades_without_it() {
        // Synapse with `password_config.pepper: "p3pp3r"` stores bcrypt(password + pepper).
        let imported = bcrypt_hash("hunter2hunter2p3pp3r", bcrypt::Version::TwoB);
        let peppered = PasswordHasher::new(
            PasswordConfig {
                bcrypt_pepper: Some("p3pp3r".into()),
                ..config(&[(0, Scheme::Bcrypt), (1, Scheme::Argon2id(CHEAP))])
            },
            Arc::new(SeededRngSource::new(5)),
        )
        .unwrap();
        assert_eq!(
            cheap().verify(0, &imported, "hunter2hunter2".into()).await,
            Ok(Verified::Mismatch),
            "without the pepper the password doesn't match"
        );
        let Ok(Verified::Match {
            upgrade: Some((1, upgraded)),
        }) = peppered.verify(0, &imported, "hunter2hunter2".into()).await
        else {
            panic!("the peppered hash must verify with the pepper configured");
        };
        // The argon2id hash is of the password alone: it verifies with or without a pepper.
        assert_eq!(
            cheap().verify(1, &upgraded, "hunter2hunter2".into()).await,
            Ok(Verified::Match { upgrade: None })
        );
    }

    #[tokio::test]
    async fn weaker_argon2_parameters_are_upgraded_stronger_are_kept() {
        let weak = hasher(&[(1, Scheme::Argon2id(CHEAP))]);
        let stronger_params = Argon2Params {
            m_cost_kib: 128,
            t_cost: 2,
            p_cost: 1,
        };
        let strong = hasher(&[(1, Scheme::Argon2id(stronger_params))]);
        let (_, weak_hash) = weak.hash("pa55word".into()).await.unwrap();
        let Ok(Verified::Match {
            upgrade: Some((1, upgraded)),
        }) = strong.verify(1, &weak_hash, "pa55word".into()).await
        else {
            panic!("a weaker hash must ask for an upgrade");
        };
        assert!(
            upgraded.starts_with("$argon2id$v=19$m=128,t=2,p=1$"),
            "{upgraded}"
        );
        // The other way round: a stronger hash verifies and is kept.
        assert_eq!(
            weak.verify(1, &upgraded, "pa55word".into()).await,
            Ok(Verified::Match { upgrade: None })
        );
        // A wrong password is a mismatch, upgrade or not.
        assert_eq!(
            strong.verify(1, &weak_hash, "pa55wore".into()).await,
            Ok(Verified::Mismatch)
        );
    }

    #[tokio::test]
    async fn older_versions_are_upgraded_even_with_the_same_parameters() {
        let old = hasher(&[(1, Scheme::Argon2id(CHEAP))]);
        let new = hasher(&[(1, Scheme::Argon2id(CHEAP)), (2, Scheme::Argon2id(CHEAP))]);
        let (1, hash) = old.hash("pa55word".into()).await.unwrap() else {
            panic!("version 1 expected");
        };
        let verified = new.verify(1, &hash, "pa55word".into()).await.unwrap();
        assert!(matches!(
            verified,
            Verified::Match {
                upgrade: Some((2, _))
            }
        ));
    }

    #[tokio::test]
    async fn other_argon2_variants_verify_and_upgrade() {
        let params = argon2_params(&CHEAP).unwrap();
        let salt = SaltString::encode_b64(&[1; 16]).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"pa55word", &salt)
            .unwrap()
            .to_string();
        assert!(argon2i.starts_with("$argon2i$"));
        let verified = cheap()
            .verify(1, &argon2i, "pa55word".into())
            .await
            .unwrap();
        assert!(matches!(
            verified,
            Verified::Match {
                upgrade: Some((1, _))
            }
        ));
    }

    #[tokio::test]
    async fn unusable_stored_hashes_are_clear_errors() {
        let hasher = cheap();
        let (_, argon) = hasher.hash("pa55word".into()).await.unwrap();
        let bcrypt = bcrypt_hash("pa55word", bcrypt::Version::TwoB);
        let too_costly_bcrypt = bcrypt.replacen("$04$", "$31$", 1);
        let too_costly_argon = argon.replacen("m=64", "m=4294967295", 1);
        let cases: Vec<(i32, String, &str)> = vec![
            (1, String::new(), "not a PHC string"),
            (1, "garbage".into(), "not a PHC string"),
            (1, "$argon2id$".into(), "not a PHC string"),
            (
                1,
                "$scrypt$ln=16,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
                "not an argon2 hash",
            ),
            (
                1,
                argon.replacen("m=64", "m=banana", 1),
                "invalid argon2 parameters",
            ),
            (
                1,
                argon.replacen("v=19", "v=7", 1),
                "unknown argon2 version",
            ),
            (
                1,
                "$argon2id$v=19$m=64,t=1,p=1".into(),
                "no salt or no hash",
            ),
            (1, too_costly_argon, "too costly"),
            (1, bcrypt.clone(), "not a PHC string"),
            (0, argon.clone(), "not a bcrypt hash"),
            (0, bcrypt.replacen("$2b$", "$2x$", 1), "not a bcrypt hash"),
            (0, bcrypt[..59].to_owned(), "malformed bcrypt hash"),
            (0, format!("{}é", &bcrypt[..58]), "malformed bcrypt hash"),
            (0, too_costly_bcrypt, "bcrypt cost too high"),
            (0, String::new(), "not a bcrypt hash"),
            (0, "$2b$".into(), "malformed bcrypt hash"),
        ];
        for (version, stored, expected) in cases {
            let err = hasher
                .verify(version, &stored, "pa55word".into())
                .await
                .unwrap_err();
            let PasswordError::InvalidHash { version: v, reason } = &err else {
                panic!("{stored:?}: unexpected {err:?}");
            };
            assert_eq!(*v, version);
            assert!(reason.contains(expected), "{stored:?}: {reason}");
            // (Short ones may appear in the message's description of the expected format.)
            if stored.len() > 12 {
                assert!(
                    !err.to_string().contains(&stored),
                    "{stored:?} echoed: {err}"
                );
            }
        }
        assert_eq!(
            hasher.verify(7, &argon, "pa55word".into()).await,
            Err(PasswordError::UnknownVersion(7))
        );
    }

    #[test]
    fn debug_output_omits_the_rng() {
        let debug = format!("{:?}", cheap());
        assert!(debug.starts_with("PasswordHasher {"), "{debug}");
        assert!(debug.contains("current_version: 1"));
    }
}
