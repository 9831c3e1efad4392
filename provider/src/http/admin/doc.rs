//! `GET /api/doc`: Swagger UI over the admin API's document ([`super::SPEC`]).
//!
//! Swagger UI is loaded from the jsDelivr CDN at a pinned version of the `swagger-ui-dist`
//! npm package, each file with its Subresource Integrity hash (taken from that package), so a
//! changed file is refused by the browser. The page's CSP allows exactly that CDN for scripts,
//! styles and images, the inline start-up script by its hash, and requests to this origin only
//! (the document, and the API calls "Try it out" makes with the token given to "Authorize").

use std::sync::OnceLock;

use axum::{http::StatusCode, response::Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::http::kit;

/// The pinned `swagger-ui-dist` release.
const CDN: &str = "https://cdn.jsdelivr.net";
const BASE: &str = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0";
/// SRI hashes of `swagger-ui-dist@5.35.0`'s files (SHA-384 of the files in the npm package).
const CSS_INTEGRITY: &str =
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I";
const BUNDLE_INTEGRITY: &str =
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9";

/// Starts Swagger UI on the document next to the page (`/api/spec.json` from `/api/doc`), with
/// the online validator off (it would send the document elsewhere).
const INIT_SCRIPT: &str = "window.addEventListener('load', function () {\n  \
    window.ui = SwaggerUIBundle({ url: 'spec.json', dom_id: '#swagger-ui', validatorUrl: null, \
    persistAuthorization: false });\n});";

/// The page and its CSP, made once.
fn page_and_csp() -> &'static (String, String) {
    static PAGE: OnceLock<(String, String)> = OnceLock::new();
    PAGE.get_or_init(|| {
        let script_hash = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(INIT_SCRIPT.as_bytes()));
        let page = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>Admin API</title>\n\
             <link rel=\"stylesheet\" href=\"{BASE}/swagger-ui.css\" integrity=\"{CSS_INTEGRITY}\" \
             crossorigin=\"anonymous\">\n</head>\n<body>\n<div id=\"swagger-ui\"></div>\n\
             <script src=\"{BASE}/swagger-ui-bundle.js\" integrity=\"{BUNDLE_INTEGRITY}\" \
             crossorigin=\"anonymous\"></script>\n<script>{INIT_SCRIPT}</script>\n</body>\n</html>\n"
        );
        // Swagger UI sets inline styles from its scripts, hence 'unsafe-inline' for styles
        // only; its icons are data: URIs.
        let csp = format!(
            "default-src 'none'; script-src {CDN} 'sha256-{script_hash}'; \
             style-src {CDN} 'unsafe-inline'; img-src {CDN} data:; connect-src 'self'; \
             form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        );
        (page, csp)
    })
}

/// `GET /api/doc`.
pub(super) async fn page() -> Response {
    let (page, csp) = page_and_csp();
    kit::html(StatusCode::OK, page.clone(), csp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_allows_the_start_up_script_by_its_hash() {
        let (page, csp) = page_and_csp();
        assert!(page.contains(INIT_SCRIPT));
        let hash = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(INIT_SCRIPT.as_bytes()));
        assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp}");
        assert!(page.contains(BUNDLE_INTEGRITY) && page.contains(CSS_INTEGRITY));
        assert!(!csp.contains("'unsafe-eval'"));
    }
}
