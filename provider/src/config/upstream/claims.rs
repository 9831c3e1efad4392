//! Claim imports: what a new account takes from the upstream identity (its subject, and the
//! localpart, display name and email address suggested or imposed).
//!
//! Each import is a minijinja template rendered over the claims the provider returned (the ID
//! token's, plus userinfo's when fetched), reachable as `user`:
//! `{{ user.preferred_username | lower }}`, `{{ user.email | split("@") | first }}`. A template
//! that renders to nothing (a missing claim) imports nothing. Each import has an `action`:
//!
//! - `ignore`: not imported;
//! - `suggest`: offered, the user may change it (localpart) or decline it (display name, email);
//! - `force`: imported as is, the user can't change it;
//! - `require`: like `force`, and the login is refused when the claim is missing.

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Problem;

/// What to do with an imported value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportAction {
    #[default]
    Ignore,
    Suggest,
    Force,
    Require,
}

impl ImportAction {
    /// Is the value imposed (the user can't change it)?
    pub fn is_forced(self) -> bool {
        matches!(self, Self::Force | Self::Require)
    }
}

/// When an imported email address counts as verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailVerification {
    /// When the provider says so (`email_verified: true`, OIDC Core §5.1).
    #[default]
    Import,
    /// Always (the provider verifies every address it returns).
    Always,
    /// Never: the user confirms it here.
    Never,
}

/// The subject: what identifies the upstream account for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectImport {
    /// Defaults to `{{ user.sub }}` (OIDC Core §2: stable and never reassigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// One imported attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimImport {
    #[serde(default)]
    pub action: ImportAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// The email address import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailImport {
    #[serde(default)]
    pub action: ImportAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default)]
    pub set_email_verification: EmailVerification,
}

/// The `claims_imports` of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsImports {
    #[serde(default)]
    pub subject: SubjectImport,
    #[serde(default)]
    pub localpart: ClaimImport,
    #[serde(default)]
    pub displayname: ClaimImport,
    #[serde(default)]
    pub email: EmailImport,
}

/// The default templates: the standard claims of OIDC Core §5.1.
pub const DEFAULT_SUBJECT: &str = "{{ user.sub }}";
pub const DEFAULT_LOCALPART: &str = "{{ user.preferred_username }}";
pub const DEFAULT_DISPLAYNAME: &str = "{{ user.name }}";
pub const DEFAULT_EMAIL: &str = "{{ user.email }}";

/// A template that doesn't compile or fails on these claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A missing claim, or a member of one, is empty rather than an error: the import then has
    // no value, and its action decides what that means.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
}

/// Renders a template over the claims (`user`); `None` when it renders to nothing but
/// whitespace.
pub fn render(template: &str, claims: &Value) -> Result<Option<String>, TemplateError> {
    let env = environment();
    let rendered = env
        .render_str(template, minijinja::context! { user => claims })
        .map_err(|e| TemplateError(e.to_string()))?;
    let trimmed = rendered.trim();
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// Checks that a template compiles.
fn compiles(template: &str) -> Result<(), TemplateError> {
    environment()
        .template_from_str(template)
        .map(|_| ())
        .map_err(|e| TemplateError(e.to_string()))
}

impl ClaimsImports {
    /// Reports the templates that don't compile, at their paths.
    pub fn check(&self, path: &str, p: &mut Vec<Problem>) {
        for (name, template) in [
            ("subject", &self.subject.template),
            ("localpart", &self.localpart.template),
            ("displayname", &self.displayname.template),
            ("email", &self.email.template),
        ] {
            if let Some(template) = template {
                if let Err(e) = compiles(template) {
                    p.push(Problem {
                        path: format!("{path}.{name}.template"),
                        message: format!("not a valid template: {e}"),
                    });
                }
            }
        }
    }

    /// The subject of the upstream account these claims describe.
    pub fn subject(&self, claims: &Value) -> Result<Option<String>, TemplateError> {
        render(
            self.subject.template.as_deref().unwrap_or(DEFAULT_SUBJECT),
            claims,
        )
    }

    /// Everything a new account would import, or the first required claim that is missing.
    pub fn import(&self, claims: &Value) -> Result<Imported, ImportError> {
        let field = |import: &ClaimImport, default: &str, name: &'static str| {
            attribute(
                import.action,
                import.template.as_deref(),
                default,
                name,
                claims,
            )
        };
        let localpart = field(&self.localpart, DEFAULT_LOCALPART, "localpart")?;
        let displayname = field(&self.displayname, DEFAULT_DISPLAYNAME, "displayname")?;
        let email = attribute(
            self.email.action,
            self.email.template.as_deref(),
            DEFAULT_EMAIL,
            "email",
            claims,
        )?;
        // OIDC Core §5.1: `email_verified` is a boolean; some providers send the string.
        let upstream_verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || claims.get("email_verified").and_then(Value::as_str) == Some("true");
        let email_verified = match self.email.set_email_verification {
            EmailVerification::Import => upstream_verified,
            EmailVerification::Always => true,
            EmailVerification::Never => false,
        };
        Ok(Imported {
            localpart,
            displayname,
            email,
            email_verified,
        })
    }
}

fn attribute(
    action: ImportAction,
    template: Option<&str>,
    default: &str,
    name: &'static str,
    claims: &Value,
) -> Result<Attribute, ImportError> {
    if action == ImportAction::Ignore {
        return Ok(Attribute {
            value: None,
            action,
        });
    }
    let value =
        render(template.unwrap_or(default), claims).map_err(|e| ImportError::Template(name, e))?;
    if value.is_none() && action == ImportAction::Require {
        return Err(ImportError::Missing(name));
    }
    Ok(Attribute { value, action })
}

/// One attribute a new account may take from the upstream identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// `None` when ignored, or when the claims don't have it.
    pub value: Option<String>,
    pub action: ImportAction,
}

impl Attribute {
    /// Is there a value the user can't change?
    pub fn is_locked(&self) -> bool {
        self.value.is_some() && self.action.is_forced()
    }
}

/// What a new account imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub localpart: Attribute,
    pub displayname: Attribute,
    pub email: Attribute,
    /// Whether an imported email address counts as verified.
    pub email_verified: bool,
}

/// Why the claims can't make an account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the provider did not return the {0} this server requires")]
    Missing(&'static str),
    #[error("the {0} template fails on the claims the provider returned: {1}")]
    Template(&'static str, TemplateError),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims() -> Value {
        json!({
            "sub": "248289761001",
            "preferred_username": "Jane.Doe",
            "name": "Jane Doe",
            "email": "Jane@Example.org",
            "email_verified": true,
            "groups": ["admins", "staff"],
        })
    }

    #[test]
    fn templates_render_over_the_claims() {
        let c = claims();
        let r = |t: &str| render(t, &c).unwrap();
        assert_eq!(
            r("{{ user.preferred_username | lower }}").as_deref(),
            Some("jane.doe")
        );
        assert_eq!(
            r("{{ user.email | split('@') | first | lower }}").as_deref(),
            Some("jane")
        );
        assert_eq!(
            r("{{ user.name }} ({{ user.groups | join(', ') }})").as_deref(),
            Some("Jane Doe (admins, staff)")
        );
        // Missing claims (and members of them) render to nothing, not an error.
        assert_eq!(r("{{ user.nickname }}"), None);
        assert_eq!(r("{{ user.address.locality }}"), None);
        assert_eq!(r("   "), None);
        assert_eq!(
            r("{{ user.nickname | default(user.sub) }}").as_deref(),
            Some("248289761001")
        );
        // Claims are data, never markup: nothing is escaped or interpreted.
        let odd = json!({"name": "<b>{{ x }}</b>"});
        assert_eq!(
            render("{{ user.name }}", &odd).unwrap().as_deref(),
            Some("<b>{{ x }}</b>")
        );
        assert!(render("{{ user.name | nosuchfilter }}", &c).is_err());
    }

    #[test]
    fn defaults_use_the_standard_claims() {
        let imports = ClaimsImports {
            localpart: ClaimImport {
                action: ImportAction::Suggest,
                template: None,
            },
            displayname: ClaimImport {
                action: ImportAction::Force,
                template: None,
            },
            email: EmailImport {
                action: ImportAction::Suggest,
                ..EmailImport::default()
            },
            ..ClaimsImports::default()
        };
        assert_eq!(
            imports.subject(&claims()).unwrap().as_deref(),
            Some("248289761001")
        );
        let imported = imports.import(&claims()).unwrap();
        assert_eq!(imported.localpart.value.as_deref(), Some("Jane.Doe"));
        assert!(!imported.localpart.is_locked());
        assert_eq!(imported.displayname.value.as_deref(), Some("Jane Doe"));
        assert!(imported.displayname.is_locked());
        assert_eq!(imported.email.value.as_deref(), Some("Jane@Example.org"));
        assert!(imported.email_verified);
    }

    #[test]
    fn actions() {
        let with = |action, template: &str| ClaimsImports {
            localpart: ClaimImport {
                action,
                template: Some(template.to_owned()),
            },
            ..ClaimsImports::default()
        };
        let c = claims();
        // ignore: nothing, even when the claim is there.
        let ignored = with(ImportAction::Ignore, "{{ user.sub }}")
            .import(&c)
            .unwrap();
        assert_eq!(ignored.localpart.value, None);
        // require: a missing claim refuses the login...
        assert_eq!(
            with(ImportAction::Require, "{{ user.nickname }}").import(&c),
            Err(ImportError::Missing("localpart"))
        );
        // ...force just has nothing to impose.
        let forced = with(ImportAction::Force, "{{ user.nickname }}")
            .import(&c)
            .unwrap();
        assert_eq!(forced.localpart.value, None);
        assert!(!forced.localpart.is_locked());
        let required = with(
            ImportAction::Require,
            "{{ user.preferred_username | lower }}",
        )
        .import(&c)
        .unwrap();
        assert_eq!(required.localpart.value.as_deref(), Some("jane.doe"));
        assert!(required.localpart.is_locked());
        assert!(matches!(
            with(ImportAction::Suggest, "{{ user.sub | nosuchfilter }}").import(&c),
            Err(ImportError::Template("localpart", _))
        ));
    }

    #[test]
    fn email_verification() {
        let with = |set_email_verification| ClaimsImports {
            email: EmailImport {
                action: ImportAction::Suggest,
                template: None,
                set_email_verification,
            },
            ..ClaimsImports::default()
        };
        let unverified = json!({"sub": "1", "email": "a@b.c", "email_verified": false});
        let as_string = json!({"sub": "1", "email": "a@b.c", "email_verified": "true"});
        let silent = json!({"sub": "1", "email": "a@b.c"});
        let verified =
            |imports: ClaimsImports, c: &Value| imports.import(c).unwrap().email_verified;
        assert!(!verified(with(EmailVerification::Import), &unverified));
        assert!(!verified(with(EmailVerification::Import), &silent));
        assert!(verified(with(EmailVerification::Import), &as_string));
        assert!(verified(with(EmailVerification::Import), &claims()));
        assert!(verified(with(EmailVerification::Always), &silent));
        assert!(!verified(with(EmailVerification::Never), &claims()));
    }

    #[test]
    fn broken_templates_are_config_problems() {
        let imports: ClaimsImports = serde_json::from_value(json!({
            "subject": {"template": "{{ user.sub "},
            "email": {"action": "force", "template": "{% if %}"},
        }))
        .unwrap();
        let mut p = Vec::new();
        imports.check("x.claims_imports", &mut p);
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "x.claims_imports.subject.template",
                "x.claims_imports.email.template"
            ]
        );
    }
}
