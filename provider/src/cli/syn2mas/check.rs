//! `provider syn2mas check`: what would go wrong (errors) or is worth knowing (warnings) before
//! a migration, each with its fix. Reads both configurations and Synapse's database; writes
//! nothing anywhere.

use std::fmt;

use super::synapse::{Counts, SynapseConfig, SynapseDb};
use crate::config::Settings;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The migration would be wrong: it doesn't start.
    Error,
    /// Worth knowing; blocks only with `--strict`.
    Warning,
}

/// One finding, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{level}: {} (fix: {})", self.message, self.fix)
    }
}

fn error(message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        level: Level::Error,
        message: message.into(),
        fix: fix.into(),
    }
}

fn warning(message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warning,
        message: message.into(),
        fix: fix.into(),
    }
}

fn users(n: i64) -> String {
    if n == 1 {
        "1 user".to_owned()
    } else {
        format!("{n} users")
    }
}

/// Everything `check` reports: the configurations against each other, then the database.
pub async fn findings(
    synapse: &SynapseConfig,
    db: &SynapseDb,
    settings: &Settings,
) -> anyhow::Result<Vec<Finding>> {
    let counts = db.counts().await?;
    let mut out = config_findings(synapse, settings);
    out.extend(database_findings(synapse, settings, &counts));
    out.sort_by_key(|f| f.level);
    Ok(out)
}

/// What the two configuration files say.
pub fn config_findings(synapse: &SynapseConfig, settings: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    if settings.matrix.homeserver != synapse.server_name {
        out.push(error(
            format!(
                "provider.yaml's `matrix.homeserver` is `{}` but Synapse's `server_name` is `{}`",
                settings.matrix.homeserver, synapse.server_name
            ),
            format!(
                "set `matrix.homeserver: {}` in provider.yaml",
                synapse.server_name
            ),
        ));
    }
    if synapse.pepper != settings.password_pepper {
        let fix = match &synapse.pepper {
            Some(_) => "set `secrets.password_pepper` in provider.yaml to Synapse's \
                        `password_config.pepper`"
                .to_owned(),
            None => "remove `secrets.password_pepper` from provider.yaml: Synapse has no \
                     `password_config.pepper`"
                .to_owned(),
        };
        out.push(error(
            "the password pepper differs between Synapse (`password_config.pepper`) and the \
             provider (`secrets.password_pepper`): migrated passwords would not verify",
            fix,
        ));
    }
    if synapse.enable_registration {
        out.push(warning(
            "Synapse has `enable_registration: true`",
            "set it to false when switching Synapse to `matrix_authentication_service` (it \
             refuses to start with it); registration moves to the provider (`account.registration`)",
        ));
    }
    if synapse.allow_guest_access {
        out.push(warning(
            "Synapse has `allow_guest_access: true`; guest accounts have no counterpart here",
            "set `allow_guest_access: false` in homeserver.yaml",
        ));
    }
    for module in &synapse.modules {
        out.push(warning(
            format!(
                "Synapse runs the module `{module}`; if it checks passwords (LDAP, …), those \
                 passwords are not in Synapse's database and don't move"
            ),
            "configure that identity source as an upstream provider in provider.yaml, or have \
             its users set a password here",
        ));
    }
    for name in &synapse.other_sso {
        out.push(warning(
            format!("Synapse has {name} sign-in enabled; the provider speaks OpenID Connect only"),
            format!(
                "put an OpenID Connect bridge in front of the {name} identity provider and map it \
                 with `synapse_idp_id`"
            ),
        ));
    }
    if synapse.delegates_already {
        out.push(warning(
            "Synapse already has `matrix_authentication_service.enabled: true`",
            "migrate from the database Synapse used before it delegated; new accounts since \
             then are the provider's already",
        ));
    }
    out
}

/// What Synapse's database holds that doesn't move as it is.
fn database_findings(
    synapse: &SynapseConfig,
    settings: &Settings,
    counts: &Counts,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (auth_provider, &n) in &counts.external_ids {
        let mapped = settings
            .upstream_providers
            .iter()
            .any(|p| p.synapse_idp_id.as_deref() == Some(auth_provider.as_str()));
        if mapped {
            continue;
        }
        let issuer = synapse
            .oidc_providers
            .get(auth_provider)
            .filter(|i| !i.is_empty())
            .map(|i| format!(" (issuer {i})"))
            .unwrap_or_default();
        out.push(error(
            format!(
                "{} linked to Synapse's SSO provider `{auth_provider}`{issuer}, which no upstream \
                 provider of provider.yaml maps: their links would be lost",
                users(n)
            ),
            format!(
                "add `synapse_idp_id: {auth_provider}` to that provider's entry in \
                 `upstream_oauth2.providers` of provider.yaml"
            ),
        ));
    }
    for (auth_provider, issuer) in &synapse.oidc_providers {
        let mapped = settings
            .upstream_providers
            .iter()
            .any(|p| p.synapse_idp_id.as_deref() == Some(auth_provider.as_str()));
        if !mapped && !counts.external_ids.contains_key(auth_provider) {
            out.push(warning(
                format!(
                    "Synapse's SSO provider `{auth_provider}` (issuer {issuer}) has no upstream \
                     provider in provider.yaml (no user is linked to it yet)"
                ),
                format!(
                    "add it to `upstream_oauth2.providers` with `synapse_idp_id: {auth_provider}` \
                     if people should keep signing in with it"
                ),
            ));
        }
    }
    if counts.guests > 0 {
        out.push(warning(
            format!(
                "{} guest accounts are not migrated: guest access has no scope under \
                 delegated authentication (MSC2967 dropped it) and guests have no credentials to \
                 sign in with",
                counts.guests
            ),
            "nothing to do; guests that registered a full account (is_guest = 0) are migrated",
        ));
    }
    if counts.appservice_users > 0 {
        out.push(warning(
            format!(
                "application services own {}, which are skipped: their appservice keeps \
                 acting for them with its `as_token`, which Synapse checks itself",
                users(counts.appservice_users)
            ),
            "nothing to do",
        ));
    }
    if counts.non_bcrypt_passwords > 0 {
        out.push(warning(
            format!(
                "{} have a password hash that is not bcrypt: they keep their account but not \
                 their password",
                users(counts.non_bcrypt_passwords)
            ),
            "they set a new one (password recovery, or `provider manage set-password`)",
        ));
    }
    if counts.non_email_threepids > 0 {
        out.push(warning(
            format!(
                "{} third-party IDs are not e-mail addresses (phone numbers): they don't move",
                counts.non_email_threepids
            ),
            "nothing to do; the homeserver keeps none either once it delegates",
        ));
    }
    if counts.deviceless_tokens > 0 {
        out.push(warning(
            format!(
                "{} access tokens have no device (old admin scripts, bots): they stop working",
                counts.deviceless_tokens
            ),
            "issue new ones with `provider manage issue-compatibility-token`",
        ));
    }
    if counts.puppet_tokens > 0 {
        out.push(warning(
            format!(
                "{} access tokens are an admin's \"log in as\" (puppets_user_id): they stop working",
                counts.puppet_tokens
            ),
            "nothing to do",
        ));
    }
    if !synapse.password_login {
        out.push(warning(
            "Synapse has password login disabled (`password_config`); passwords move anyway",
            "nothing to do",
        ));
    }
    out
}
