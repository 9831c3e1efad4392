//! MSC4191 `org.matrix.cross_signing_reset`: the page with the button, and its form, which
//! asks the homeserver to let the user reset their cross-signing keys from their client.

use axum::{http::StatusCode, response::Response};

use super::{account_page, PATH};
use crate::domain::account_management::Action;
use crate::http::{
    kit::{self, session::BrowserCookie},
    AppState,
};
use crate::storage::User;

/// The page (`GET`): what the reset does, and the form to allow it.
pub(super) fn cross_signing_page(
    state: &AppState,
    cookie: &BrowserCookie,
    user: &User,
) -> Response {
    account_page(
        state,
        StatusCode::OK,
        "pages/account_cross_signing.html",
        Action::CrossSigningReset,
        user,
        None,
        minijinja::context! {
            csrf => cookie.csrf_token(),
            action => PATH,
            allowed => false,
        },
    )
}

/// MSC4191 `org.matrix.cross_signing_reset`: the homeserver lets the user replace their
/// cross-signing keys without interactive authentication for a while (the homeserver
/// contract's `allow_cross_signing_reset`).
pub(super) async fn allow_cross_signing_reset(state: &AppState, user: &User) -> Response {
    match state
        .homeserver
        .allow_cross_signing_reset(&user.username)
        .await
    {
        Ok(()) => account_page(
            state,
            StatusCode::OK,
            "pages/account_cross_signing.html",
            Action::CrossSigningReset,
            user,
            None,
            minijinja::context! { allowed => true },
        ),
        Err(e) => {
            tracing::error!(user = %user.username, error = %e, "account: the homeserver did not allow the cross-signing reset");
            kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Your Matrix server can't allow the reset right now. Try again in a moment.",
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::http::web::account::tests::page_context;

    #[test]
    fn the_cross_signing_template_renders() {
        let t = crate::core::templates::Templates::new();
        let html = t.render(
            "pages/account_cross_signing.html",
            minijinja::context! { allowed => false, ..page_context() },
        );
        assert!(html.is_some());
    }
}
