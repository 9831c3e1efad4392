//! Where the sign-in pages (login, registration and its email check, an upstream login) send
//! the browser once the user is signed in: one typed value, [`AfterSignIn`], carried in their
//! links and forms as `grant=<id>` (a pending authorization request) or `next=<local path>`
//! (another page that asked for a sign-in), and parsed here, once.
//!
//! Only the pages listed in [`AfterSignIn`] can be returned to, each rebuilt from what it
//! understands (an ID that must be a ULID, a normalised user code, a known MSC4191 action and a
//! valid device ID), never passed through, so neither parameter can redirect anywhere else (no
//! open redirect, RFC 9700 §4.11).

use ulid::Ulid;

use crate::{
    account_management::Action, endpoints, scope::is_valid_device_id, token::normalize_user_code,
};

/// The longest user code carried back to the device link page (RFC 8628 §6.1 codes are 8).
pub const MAX_CARRIED_CODE: usize = 16;

/// What to continue with after signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSignIn {
    /// A pending authorization request: its consent step, `/consent/{id}`, decides what's next.
    Grant(Ulid),
    /// The device link page (RFC 8628 §3.3), with the user code typed so far (normalised).
    DeviceLink { code: Option<String> },
    /// The account page (MSC4191), at a known action (as the client named it: stable or
    /// unstable) and, for device actions, a device.
    Account {
        action: Option<String>,
        device_id: Option<String>,
    },
    /// The confirmation page of a legacy Matrix SSO login.
    CompatSso(Ulid),
}

impl AfterSignIn {
    /// The account page itself.
    pub const ACCOUNT: Self = Self::Account {
        action: None,
        device_id: None,
    };

    /// From a page's `grant` and `next` parameters (a grant wins); `None` when neither names a
    /// page that can be returned to.
    pub fn from_params(grant: Option<&str>, next: Option<&str>) -> Option<Self> {
        if let Some(id) = grant.and_then(|g| Ulid::from_string(g).ok()) {
            return Some(Self::Grant(id));
        }
        Self::from_next(next?)
    }

    /// From a `next` parameter: one of the pages that accept a return, rebuilt.
    pub fn from_next(next: &str) -> Option<Self> {
        if let Some(rest) = next.strip_prefix(endpoints::LINK) {
            let query = query_of(rest)?;
            let code = first(query, "code")
                .map(|c| normalize_user_code(&c))
                .filter(|c| !c.is_empty() && c.len() <= MAX_CARRIED_CODE);
            return Some(Self::DeviceLink { code });
        }
        if let Some(rest) = next.strip_prefix(endpoints::ACCOUNT) {
            let query = query_of(rest)?;
            return Some(Self::Account {
                action: first(query, "action").filter(|a| Action::parse(a).is_some()),
                device_id: first(query, "device_id").filter(|d| is_valid_device_id(d)),
            });
        }
        let id = next
            .strip_prefix(endpoints::COMPLETE_COMPAT_SSO)?
            .strip_prefix('/')?;
        Ulid::from_string(id).ok().map(Self::CompatSso)
    }

    /// The pending authorization request, when this continues one.
    pub fn grant(&self) -> Option<Ulid> {
        match self {
            Self::Grant(id) => Some(*id),
            _ => None,
        }
    }

    /// The page to go to (a local path).
    pub fn path(&self) -> String {
        match self {
            Self::Grant(id) => format!("{}/{id}", endpoints::CONSENT),
            Self::DeviceLink { code } => link_path(code.as_deref()),
            Self::Account { action, device_id } => {
                account_path(action.as_deref(), device_id.as_deref())
            }
            Self::CompatSso(id) => format!("{}/{id}", endpoints::COMPLETE_COMPAT_SSO),
        }
    }

    /// The query that carries this value to a sign-in page: `grant=…` or `next=…`.
    pub fn query(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        match self {
            Self::Grant(id) => query.append_pair("grant", &id.to_string()),
            other => query.append_pair("next", &other.path()),
        };
        query.finish()
    }

    /// Where to go once signed in: on to `after`, or back to the login page (which then says
    /// who is signed in).
    pub fn target(after: Option<&Self>) -> String {
        after.map_or_else(|| endpoints::LOGIN.to_owned(), Self::path)
    }

    /// `(grant, next)` as the sign-in pages' templates carry them in hidden fields.
    pub fn fields(&self) -> (Option<String>, Option<String>) {
        match self {
            Self::Grant(id) => (Some(id.to_string()), None),
            other => (None, Some(other.path())),
        }
    }
}

/// A sign-in page (`path`), to continue with `after` once signed in.
pub fn sign_in_link(path: &str, after: Option<&AfterSignIn>) -> String {
    match after {
        Some(after) => format!("{path}?{}", after.query()),
        None => path.to_owned(),
    }
}

/// `/upstream/authorize/{id}`, carrying the pending authorization request or the page to
/// return to.
pub fn start_url(provider_id: Ulid, after: Option<&AfterSignIn>) -> String {
    sign_in_link(
        &format!("{}/{provider_id}", endpoints::UPSTREAM_AUTHORIZE),
        after,
    )
}

/// A hint is a username, or a Matrix ID of this server (`@alice:example.org`, optionally as
/// `mxid:@alice:example.org`, the form Matrix clients send).
pub fn username_from_hint(hint: &str, server_name: &str) -> Option<String> {
    let hint = hint.strip_prefix("mxid:").unwrap_or(hint);
    let name = match hint.strip_prefix('@') {
        Some(mxid) => {
            let (localpart, server) = mxid.split_once(':')?;
            (server == server_name).then_some(localpart)?
        }
        None => hint,
    };
    crate::username::check(name, server_name)
        .is_ok()
        .then(|| name.to_owned())
}

/// The part after a page's path: nothing, or a query.
fn query_of(rest: &str) -> Option<&str> {
    match rest {
        "" => Some(""),
        rest => rest.strip_prefix('?'),
    }
}

/// The first value of a query parameter.
fn first(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// A normalised user code as people read it: `XXXX-XXXX` (RFC 8628 §6.1); other lengths as
/// they are.
pub fn display_code(normalized: &str) -> String {
    if normalized.len() == 8 && normalized.is_ascii() {
        format!("{}-{}", &normalized[..4], &normalized[4..])
    } else {
        normalized.to_owned()
    }
}

/// The device link page's local path, with a user code when there is one (normalised: only
/// ASCII letters and digits and the dash, so nothing to escape).
pub fn link_path(code: Option<&str>) -> String {
    let code = code
        .map(normalize_user_code)
        .filter(|c| !c.is_empty() && c.len() <= MAX_CARRIED_CODE);
    match code {
        Some(code) => format!("{}?code={}", endpoints::LINK, display_code(&code)),
        None => endpoints::LINK.to_owned(),
    }
}

/// `/account` with these parameters.
pub fn account_path(action: Option<&str>, device_id: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(action) = action {
        query.append_pair("action", action);
    }
    if let Some(device_id) = device_id {
        query.append_pair("device_id", device_id);
    }
    let query = query.finish();
    if query.is_empty() {
        endpoints::ACCOUNT.to_owned()
    } else {
        format!("{}?{query}", endpoints::ACCOUNT)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The page a `next` leads back to, as the pages that accept one rebuild it.
    fn return_target(next: &str) -> Option<String> {
        AfterSignIn::from_next(next).map(|after| after.path())
    }

    #[test]
    fn the_return_target_is_only_ever_the_link_page() {
        assert_eq!(return_target("/link").as_deref(), Some("/link"));
        assert_eq!(
            return_target("/link?code=bcdf-ghjk").as_deref(),
            Some("/link?code=BCDF-GHJK")
        );
        assert_eq!(
            return_target("/link?x=1&code=bc%20df%22ghjk").as_deref(),
            Some("/link?code=BCDF-GHJK")
        );
        // Anything else in the query is dropped; the code is rebuilt from letters and digits.
        assert_eq!(
            return_target("/link?code=%2F%2Fevil.example").as_deref(),
            Some("/link?code=EVILEXAMPLE")
        );
        assert_eq!(return_target("/link?code=").as_deref(), Some("/link"));
        assert_eq!(
            return_target(&format!("/link?code={}", "B".repeat(40))).as_deref(),
            Some("/link")
        );
        for refused in [
            "",
            "/",
            "/links",
            "/link/approve",
            "/link#x",
            "//evil.example/link",
            "https://evil.example/link",
            "/consent/01H",
            "link",
            "/LINK",
        ] {
            assert_eq!(return_target(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_return_target_is_only_ever_an_account_page() {
        assert_eq!(return_target("/account").as_deref(), Some("/account"));
        assert_eq!(
            return_target("/account?action=org.matrix.device_view&device_id=ABCDEF").as_deref(),
            Some("/account?action=org.matrix.device_view&device_id=ABCDEF")
        );
        // Unknown parameters, unknown actions, invalid device IDs are dropped; the first of a
        // repeated parameter counts.
        assert_eq!(
            return_target(
                "/account?x=https://evil.example&device_id=A%2FB&action=org.matrix.sessions_list&action=evil"
            )
            .as_deref(),
            Some("/account?action=org.matrix.sessions_list")
        );
        assert_eq!(
            return_target("/account?action=%2F%2Fevil.example").as_deref(),
            Some("/account")
        );
        for refused in [
            "",
            "/",
            "/accounts",
            "/account/x",
            "/account#x",
            "//evil.example/account",
            "https://evil.example/account",
            "account",
            "/ACCOUNT",
        ] {
            assert_eq!(return_target(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_return_target_is_only_ever_a_confirmation_page() {
        let id = Ulid::from_parts(1_700_000_000_000, 42);
        let page = format!("/complete-compat-sso/{id}");
        assert_eq!(return_target(&page).as_deref(), Some(page.as_str()));
        // Lower case is the same ULID, rebuilt canonical.
        assert_eq!(
            return_target(&format!(
                "/complete-compat-sso/{}",
                id.to_string().to_lowercase()
            ))
            .as_deref(),
            Some(page.as_str())
        );
        for refused in [
            "/complete-compat-sso",
            "/complete-compat-sso/",
            "/complete-compat-sso/nope",
            &format!("{page}?x=1"),
            &format!("{page}/x"),
            &format!("//evil.example{page}"),
            &format!("https://evil.example{page}"),
            &format!("/complete-compat-ssox/{id}"),
        ] {
            assert_eq!(return_target(refused), None, "{refused}");
        }
    }

    #[test]
    fn hints() {
        let hint = |h| username_from_hint(h, "example.org");
        assert_eq!(hint("alice"), Some("alice".into()));
        assert_eq!(hint("@alice:example.org"), Some("alice".into()));
        assert_eq!(hint("mxid:@alice:example.org"), Some("alice".into()));
        assert_eq!(hint("@alice:elsewhere.org"), None);
        assert_eq!(hint("Not A Name"), None);
        assert_eq!(hint("@:example.org"), None);
    }

    #[test]
    fn only_known_pages_come_back_rebuilt() {
        let grant = Ulid::nil();
        assert_eq!(
            AfterSignIn::from_params(Some(&grant.to_string()), Some("/account")),
            Some(AfterSignIn::Grant(grant))
        );
        assert_eq!(
            AfterSignIn::from_params(Some("not-a-ulid"), None),
            None,
            "a bad grant is dropped"
        );
        let link = AfterSignIn::from_next("/link?code=abcd-efgh&x=https://evil").unwrap();
        assert_eq!(link.path(), "/link?code=ABCD-EFGH");
        let account =
            AfterSignIn::from_next("/account?action=org.matrix.session_end&device_id=A%20B")
                .unwrap();
        assert_eq!(account.path(), "/account?action=org.matrix.session_end");
        assert_eq!(
            AfterSignIn::from_next("/account?action=nope")
                .unwrap()
                .path(),
            "/account"
        );
        let sso = format!("/complete-compat-sso/{grant}");
        assert_eq!(AfterSignIn::from_next(&sso).unwrap().path(), sso);
        for bad in [
            "https://evil.example/",
            "//evil.example/link",
            "/linkx",
            "/accounts",
            "/complete-compat-sso/../x",
            "/consent/x",
            "",
        ] {
            assert_eq!(AfterSignIn::from_next(bad), None, "{bad}");
        }
        assert_eq!(
            sign_in_link("/register", Some(&link)),
            "/register?next=%2Flink%3Fcode%3DABCD-EFGH"
        );
        assert_eq!(
            sign_in_link("/login", Some(&AfterSignIn::Grant(grant))),
            format!("/login?grant={grant}")
        );
    }

    proptest! {
        /// Whatever `next` says, the page it leads to is a local path of one of the pages that
        /// accept a return, and reading it back gives the same page.
        #[test]
        fn never_an_open_redirect(next in ".{0,80}") {
            if let Some(after) = AfterSignIn::from_next(&next) {
                let path = after.path();
                prop_assert!(path.starts_with('/') && !path.starts_with("//"), "{path}");
                prop_assert!(
                    path.starts_with(endpoints::LINK)
                        || path.starts_with(endpoints::ACCOUNT)
                        || path.starts_with(endpoints::COMPLETE_COMPAT_SSO)
                );
                prop_assert_eq!(AfterSignIn::from_next(&path), Some(after));
            }
        }

        /// What a page carries (its hidden fields, or its link's query) reads back as the same
        /// value, for every value a page can hold: a grant, or a page rebuilt from a `next`.
        #[test]
        fn carried_values_read_back(
            kind in 0..5u8,
            id in any::<u128>(),
            tail in "[A-Za-z0-9_.~%&=-]{0,24}",
        ) {
            let after = match kind {
                0 => Some(AfterSignIn::Grant(Ulid(id))),
                1 => AfterSignIn::from_next(&format!("/link?code={tail}")),
                2 => AfterSignIn::from_next(&format!("/account?action={tail}")),
                3 => AfterSignIn::from_next(&format!(
                    "/account?action=org.matrix.device_view&device_id={tail}"
                )),
                _ => AfterSignIn::from_next(&format!("/complete-compat-sso/{}", Ulid(id))),
            };
            prop_assert!(after.is_some());
            if let Some(after) = after {
                let (grant, next) = after.fields();
                let from_fields = AfterSignIn::from_params(grant.as_deref(), next.as_deref());
                prop_assert_eq!(from_fields.as_ref(), Some(&after));
                let query = after.query();
                let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                let param = |name: &str| {
                    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
                };
                let from_query = AfterSignIn::from_params(param("grant"), param("next"));
                prop_assert_eq!(from_query.as_ref(), Some(&after));
                prop_assert_eq!(AfterSignIn::target(Some(&after)), after.path());
            }
        }
    }
}
