//! `provider manage …`: account operations from the command line, for operators (the same
//! operations as the admin API, through [`crate::core::accounts`]).
//!
//! Output, the same style as `provider homeserver sync-devices`: one line per thing done on
//! stdout, `<what>\t<user>[\t<detail>]`, plain whether or not it is a terminal (progress, for
//! the long commands, goes to a terminal's stderr only); errors on stderr. Exit status 0 when
//! everything was done, 1 otherwise: an unknown user, a refused value, or a homeserver that
//! could not be told now (the change is made and its job stays queued for the server's worker:
//! the line `queued\t<user>\t<error>` says so). Secret values (`issue-*`) are the only thing
//! those commands print on stdout.

use std::{
    io::{BufRead as _, IsTerminal as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use chrono::Duration;
use clap::{Args, Subcommand};

use crate::{
    clock::Entropy,
    config::Settings,
    core::{
        accounts::{
            self, AccountError, HashedPassword, NewEmail, NewUser, MAX_REGISTRATION_TOKEN_LEN,
        },
        matrix::provisioning::Outcome,
    },
    http::{compat, AppState},
    server,
    storage::{generate_registration_token, BoxRepository, StorageError, User},
};

/// The configuration file (as every other command takes it).
#[derive(Debug, Clone, Args)]
pub struct ConfigFile {
    /// The configuration file.
    #[arg(
        short,
        long = "config",
        env = "PROVIDER_CONFIG",
        default_value = "provider.yaml"
    )]
    pub config: PathBuf,
}

/// A new password, from the command line or standard input.
#[derive(Debug, Clone, Args)]
pub struct PasswordInput {
    /// The password (visible to other users of this machine in the process list: prefer
    /// --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Accept a password the policy refuses (too short).
    #[arg(long)]
    ignore_password_policy: bool,
}

impl PasswordInput {
    /// The password given, if any.
    fn read(&self) -> anyhow::Result<Option<String>> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if !self.password_stdin {
            return Ok(None);
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("can't read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        anyhow::ensure!(!password.is_empty(), "standard input holds no password");
        Ok(Some(password))
    }
}

#[derive(Debug, Subcommand)]
pub enum ManageCommand {
    /// Create an account (asks the homeserver whether the username is free), and provision
    /// it on the homeserver. Email addresses are stored as verified. Prints `created`.
    #[command(after_help = "Examples:\n  \
        provider manage register-user -c provider.yaml alice --email alice@example.com --admin\n  \
        printf '%s\\n' \"$PASSWORD\" | provider manage register-user alice --password-stdin \
        --display-name 'Alice Liddell' --yes")]
    RegisterUser {
        #[command(flatten)]
        file: ConfigFile,
        /// The username (Matrix localpart).
        username: String,
        #[command(flatten)]
        password: PasswordInput,
        /// An email address (verified); repeat for several.
        #[arg(long = "email", value_name = "ADDRESS")]
        emails: Vec<String>,
        /// May be granted the admin scopes (urn:synapse:admin:*, urn:mas:admin).
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        display_name: Option<String>,
        /// Don't ask for confirmation (it is only asked on a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// Set a user's password. Their browser sessions end; Matrix devices stay (end them with
    /// kill-sessions).
    #[command(after_help = "Example:\n  \
        printf '%s\\n' \"$PASSWORD\" | provider manage set-password -c provider.yaml alice --password-stdin")]
    SetPassword {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Add an email address to a user, without any mail (unverified unless --verified).
    #[command(after_help = "Example:\n  \
        provider manage add-email -c provider.yaml alice alice@example.com --verified")]
    AddEmail {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
        email: String,
        /// Store it as verified (then the homeserver gets it too).
        #[arg(long)]
        verified: bool,
    },
    /// Mark one of a user's email addresses verified.
    #[command(after_help = "Example:\n  \
        provider manage verify-email -c provider.yaml alice alice@example.com")]
    VerifyEmail {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
        email: String,
    },
    /// Let a user be granted the admin scopes (urn:synapse:admin:*, urn:mas:admin).
    #[command(after_help = "Example:\n  provider manage promote-admin -c provider.yaml alice")]
    PromoteAdmin {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
    },
    /// Stop a user being granted the admin scopes; their sessions holding one end.
    #[command(after_help = "Example:\n  provider manage demote-admin -c provider.yaml alice")]
    DemoteAdmin {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
    },
    /// Lock a user: no sign-in, every token inactive, the homeserver told; sessions stay
    /// for unlock-user.
    #[command(after_help = "Example:\n  provider manage lock-user -c provider.yaml mallory")]
    LockUser {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
    },
    /// Unlock a user: their sessions work again.
    #[command(after_help = "Example:\n  provider manage unlock-user -c provider.yaml mallory")]
    UnlockUser {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
    },
    /// End every session of a user: OAuth 2.0 and legacy logins (their devices are deleted on
    /// the homeserver) and browser sessions.
    #[command(after_help = "Example:\n  provider manage kill-sessions -c provider.yaml alice")]
    KillSessions {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
    },
    /// Issue a legacy (compat) access token for a device of a user; the token never expires.
    /// Prints the token and nothing else on stdout; the device is created on the homeserver.
    #[command(after_help = "Example:\n  \
        TOKEN=$(provider manage issue-compatibility-token -c provider.yaml alice --device-id BOTDEVICE)")]
    IssueCompatibilityToken {
        #[command(flatten)]
        file: ConfigFile,
        username: String,
        /// The Matrix device (default: a new random one).
        #[arg(long)]
        device_id: Option<String>,
        /// Let the token act as a Synapse administrator (the user must be allowed to administer).
        #[arg(long)]
        synapse_admin: bool,
    },
    /// Issue a registration token (for registration that requires one). Prints the token and
    /// nothing else on stdout.
    #[command(after_help = "Example:\n  \
        provider manage issue-registration-token -c provider.yaml --usage-limit 5 --expires-in 7d")]
    IssueRegistrationToken {
        #[command(flatten)]
        file: ConfigFile,
        /// How many registrations it allows (default: no limit).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        usage_limit: Option<u32>,
        /// How long it works: a number with s, m, h or d (e.g. 90m, 7d; default: for ever).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
        /// The token's value, when you choose it: 1 to 64 of A-Z a-z 0-9 - . _ ~ (default: a
        /// random one).
        #[arg(long)]
        token: Option<String>,
    },
    /// Provision every user on the homeserver again (profile, addresses, lock, deactivation),
    /// e.g. after restoring the homeserver from a backup. One line per user: `provisioned` or
    /// `queued`.
    #[command(after_help = "Example:\n  provider manage provision-all-users -c provider.yaml")]
    ProvisionAllUsers {
        #[command(flatten)]
        file: ConfigFile,
    },
}

impl ManageCommand {
    /// The configuration file the command reads.
    pub fn config(&self) -> &std::path::Path {
        match self {
            Self::RegisterUser { file, .. }
            | Self::SetPassword { file, .. }
            | Self::AddEmail { file, .. }
            | Self::VerifyEmail { file, .. }
            | Self::PromoteAdmin { file, .. }
            | Self::DemoteAdmin { file, .. }
            | Self::LockUser { file, .. }
            | Self::UnlockUser { file, .. }
            | Self::KillSessions { file, .. }
            | Self::IssueCompatibilityToken { file, .. }
            | Self::IssueRegistrationToken { file, .. }
            | Self::ProvisionAllUsers { file } => &file.config,
        }
    }
}

/// `90s`, `15m`, `12h`, `7d`.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let (number, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{raw}` is not a duration like 90m, 12h or 7d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    seconds
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(Duration::seconds)
        .ok_or_else(|| format!("`{raw}` is not a duration like 90m, 12h or 7d"))
}

/// Exit status 1: the command ran and something was not done (or not told to the homeserver).
const FAILURE: u8 = 1;

/// Runs a `provider manage` command on valid settings.
pub async fn run(command: ManageCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let storage = server::open_storage(&settings, Entropy::system()).await?;
    let state = AppState::new(settings, storage.clone())?;
    let code = Manage { state: &state }.run(command).await;
    storage.close().await;
    code
}

/// Why a command did not complete: said on stderr, exit status 1.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no user `{0}`")]
    NoUser(String),
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("{0}")]
    Other(String),
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        Self::Account(e.into())
    }
}

struct Manage<'a> {
    state: &'a AppState,
}

impl Manage<'_> {
    async fn run(&self, command: ManageCommand) -> anyhow::Result<ExitCode> {
        match self.dispatch(command).await {
            Ok(code) => Ok(code),
            Err(Refusal::Account(AccountError::Storage(e))) => Err(e.into()),
            Err(refusal) => {
                eprintln!("error: {refusal}");
                Ok(ExitCode::from(FAILURE))
            }
        }
    }

    /// Prints `queued` for each job that stayed queued; the exit status.
    fn report(&self, username: &str, outcomes: &[Outcome]) -> ExitCode {
        let mut queued = false;
        for outcome in outcomes {
            if let Outcome::Queued(error) = outcome {
                println!("queued\t{username}\t{error}");
                queued = true;
            }
        }
        if queued {
            ExitCode::from(FAILURE)
        } else {
            ExitCode::SUCCESS
        }
    }

    async fn hash(&self, input: &PasswordInput) -> Result<Option<HashedPassword>, Refusal> {
        let password = input.read().map_err(|e| Refusal::Other(format!("{e:#}")))?;
        match password {
            Some(p) => Ok(Some(
                accounts::hash_password(self.state, &p, !input.ignore_password_policy).await?,
            )),
            None => Ok(None),
        }
    }

    async fn dispatch(&self, command: ManageCommand) -> Result<ExitCode, Refusal> {
        let state = self.state;
        let now = || state.storage.entropy().clock.now();
        match command {
            ManageCommand::RegisterUser {
                username,
                password,
                emails,
                admin,
                display_name,
                yes,
                ..
            } => {
                accounts::check_new_username(state, &username).await?;
                if !yes && std::io::stdin().is_terminal() && !confirm(&username)? {
                    return Err(Refusal::Other("nothing was created".into()));
                }
                let new = NewUser {
                    username,
                    password: self.hash(&password).await?,
                    emails: emails
                        .into_iter()
                        .map(|address| NewEmail {
                            address,
                            verified: true,
                        })
                        .collect(),
                    admin,
                    display_name,
                };
                let mut repo = state.storage.begin().await?;
                let (user, jobs) = accounts::create_user(&mut repo, &new, now()).await?;
                repo.commit().await?;
                println!("created\t{}\t{}", user.username, user.id);
                Ok(self.report(&user.username, &jobs.run_and_report(state).await?))
            }
            ManageCommand::SetPassword {
                username, password, ..
            } => {
                // Read before hashing, which runs outside any transaction.
                let user = find_user(&mut state.storage.reader().await?, &username).await?;
                let Some(hashed) = self.hash(&password).await? else {
                    return Err(Refusal::Other(
                        "give the password with --password or --password-stdin".into(),
                    ));
                };
                let mut repo = state.storage.begin().await?;
                accounts::reset_password(&mut repo, &user, &hashed).await?;
                repo.commit().await?;
                println!("password-set\t{}", user.username);
                Ok(ExitCode::SUCCESS)
            }
            ManageCommand::AddEmail {
                username,
                email,
                verified,
                ..
            } => {
                let mut repo = state.storage.begin().await?;
                let user = find_user(&mut repo, &username).await?;
                let (email, jobs) =
                    accounts::add_email(&mut repo, &user, email.trim(), verified, now()).await?;
                repo.commit().await?;
                let what = if verified {
                    "email-added-verified"
                } else {
                    "email-added"
                };
                println!("{what}\t{}\t{}", user.username, email.email);
                Ok(self.report(&user.username, &jobs.run_and_report(state).await?))
            }
            ManageCommand::VerifyEmail {
                username, email, ..
            } => {
                // Stored normalised (the domain in lower case): compared the same way.
                let wanted = accounts::emails::checked_address(&email)
                    .unwrap_or_else(|_| email.trim().to_owned());
                let mut repo = state.storage.begin().await?;
                let user = find_user(&mut repo, &username).await?;
                let found = repo
                    .user_emails()
                    .list_for_user(user.id)
                    .await?
                    .into_iter()
                    .find(|e| e.email == wanted);
                let Some(found) = found else {
                    return Err(Refusal::Other(format!(
                        "{} has no address `{email}` (add it with add-email)",
                        user.username
                    )));
                };
                let (email, jobs) = accounts::verify_email(&mut repo, &found, now()).await?;
                repo.commit().await?;
                println!("email-verified\t{}\t{}", user.username, email.email);
                Ok(self.report(&user.username, &jobs.run_and_report(state).await?))
            }
            ManageCommand::PromoteAdmin { username, .. } => self.set_admin(&username, true).await,
            ManageCommand::DemoteAdmin { username, .. } => self.set_admin(&username, false).await,
            ManageCommand::LockUser { username, .. } => self.set_locked(&username, true).await,
            ManageCommand::UnlockUser { username, .. } => self.set_locked(&username, false).await,
            ManageCommand::KillSessions { username, .. } => {
                let mut repo = state.storage.begin().await?;
                let user = find_user(&mut repo, &username).await?;
                let jobs = accounts::end_all_sessions(&mut repo, user.id, now()).await?;
                repo.commit().await?;
                println!("sessions-ended\t{}", user.username);
                Ok(self.report(&user.username, &jobs.run_and_report(state).await?))
            }
            ManageCommand::IssueCompatibilityToken {
                username,
                device_id,
                synapse_admin,
                ..
            } => {
                let mut repo = state.storage.begin().await?;
                let user = find_user(&mut repo, &username).await?;
                if synapse_admin && !user.can_request_admin {
                    return Err(Refusal::Other(format!(
                        "{} may not administer the server (promote-admin first)",
                        user.username
                    )));
                }
                if !user.is_active() {
                    return Err(Refusal::Other(format!(
                        "{} is locked or deactivated",
                        user.username
                    )));
                }
                let mut rng = state.storage.entropy().rng.rng();
                let device_id = device_id.unwrap_or_else(|| compat::generate_device_id(&mut rng));
                if !compat::is_valid_device_id(&device_id) {
                    return Err(Refusal::Other(format!(
                        "`{device_id}` is not a valid device ID: use 1 to 255 of A-Z a-z 0-9 - . _ ~"
                    )));
                }
                let (issued, jobs) = accounts::issue_compat_token(
                    &mut repo,
                    &user,
                    &device_id,
                    synapse_admin,
                    now(),
                    &mut rng,
                )
                .await?;
                repo.commit().await?;
                println!("{}", issued.access_token);
                if std::io::stderr().is_terminal() {
                    eprintln!(
                        "(a token for device {device_id} of {}; it never expires)",
                        user.username
                    );
                }
                let outcomes = jobs.run_and_report(state).await?;
                let mut code = ExitCode::SUCCESS;
                for outcome in outcomes {
                    if let Outcome::Queued(error) = outcome {
                        // stdout holds the token only: the delay is told on stderr.
                        eprintln!(
                            "queued: the homeserver doesn't have device {device_id} yet ({error}); \
                             the server's job worker retries"
                        );
                        code = ExitCode::from(FAILURE);
                    }
                }
                Ok(code)
            }
            ManageCommand::IssueRegistrationToken {
                usage_limit,
                expires_in,
                token,
                ..
            } => {
                let value = match token {
                    Some(value) => value,
                    None => generate_registration_token(&mut state.storage.entropy().rng.rng()),
                };
                if !accounts::is_valid_registration_token(&value) {
                    return Err(Refusal::Other(format!(
                        "a token must be 1 to {MAX_REGISTRATION_TOKEN_LEN} of A-Z a-z 0-9 - . _ ~"
                    )));
                }
                let expires_at = expires_in.map(|d| now() + d);
                let mut repo = state.storage.begin().await?;
                match repo
                    .registration_tokens()
                    .add(&value, usage_limit, expires_at)
                    .await
                {
                    Ok(_) => {}
                    Err(StorageError::Conflict(_)) => {
                        return Err(Refusal::Other(
                            "a registration token with this value exists".into(),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
                repo.commit().await?;
                println!("{value}");
                Ok(ExitCode::SUCCESS)
            }
            ManageCommand::ProvisionAllUsers { .. } => {
                let progress = std::io::stderr().is_terminal();
                let mut done = 0_usize;
                let mut queued = 0_usize;
                accounts::provision_all(state, |user, outcome| {
                    match outcome {
                        Outcome::Done => println!("provisioned\t{}", user.username),
                        Outcome::Queued(error) => {
                            queued += 1;
                            println!("queued\t{}\t{error}", user.username);
                        }
                    }
                    done += 1;
                    if progress {
                        eprint!("\r{done} users provisioned");
                    }
                })
                .await?;
                if progress {
                    eprintln!();
                }
                Ok(if queued == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(FAILURE)
                })
            }
        }
    }

    async fn set_admin(&self, username: &str, admin: bool) -> Result<ExitCode, Refusal> {
        let now = self.state.storage.entropy().clock.now();
        let mut repo = self.state.storage.begin().await?;
        let user = find_user(&mut repo, username).await?;
        let (user, jobs) = accounts::set_admin(&mut repo, &user, admin, now).await?;
        repo.commit().await?;
        println!(
            "{}\t{}",
            if admin { "promoted" } else { "demoted" },
            user.username
        );
        Ok(self.report(&user.username, &jobs.run_and_report(self.state).await?))
    }

    async fn set_locked(&self, username: &str, locked: bool) -> Result<ExitCode, Refusal> {
        let now = self.state.storage.entropy().clock.now();
        let mut repo = self.state.storage.begin().await?;
        let user = find_user(&mut repo, username).await?;
        let verb = if locked { "locked" } else { "unlocked" };
        if user.locked_at.is_some() == locked {
            println!("{verb}\t{}\t(already)", user.username);
            return Ok(ExitCode::SUCCESS);
        }
        let (user, jobs) = accounts::set_locked(&mut repo, &user, locked, now).await?;
        repo.commit().await?;
        println!("{verb}\t{}", user.username);
        Ok(self.report(&user.username, &jobs.run_and_report(self.state).await?))
    }
}

/// The user `username`, read in the command's transaction (or a reader, before hashing).
async fn find_user(repo: &mut BoxRepository, username: &str) -> Result<User, Refusal> {
    repo.users()
        .find_by_username(username)
        .await?
        .ok_or_else(|| Refusal::NoUser(username.to_owned()))
}

/// Asks on the terminal whether to create the user.
fn confirm(username: &str) -> Result<bool, Refusal> {
    eprint!("Create the user `{username}`? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Refusal::Other(format!("can't read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::minutes(15)));
        assert_eq!(parse_duration("12h"), Ok(Duration::hours(12)));
        assert_eq!(parse_duration("7d"), Ok(Duration::days(7)));
        for bad in ["", "d", "7", "-1d", "0h", "1w", "1.5h", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
