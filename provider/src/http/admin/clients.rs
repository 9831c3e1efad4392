//! OAuth 2.0 clients: list, get, create, update, delete.
//!
//! A client made here is a dynamic client: its metadata (RFC 7591 §2) is judged by the same
//! rules as dynamic registration ([`client_registration::validate`], MSC2966), with one thing
//! only an operator may give: the client credentials grant (RFC 6749 §4.4), for confidential
//! clients; a client with only that grant is a service client, which needs no redirect URI.
//! Secrets are generated here, shown once, stored encrypted with the configured key. Static
//! clients belong to the config file (`config sync` would undo any change): they are listed but
//! can't be changed or deleted here. Deleting a client ends its sessions first, so their devices
//! are deleted on the homeserver.

use axum::{extract::Path, extract::State, http::StatusCode, Json};
use chrono::{DateTime, Utc};
use rand::{distributions::Alphanumeric, Rng as _};
use serde::Serialize;
use serde_json::{Map, Value};
use ulid::Ulid;
use utoipa::ToSchema;

use super::{parse_id, Admin, ApiError, Page, PageParams, Paging, Problem};
use crate::{
    core::{matrix::provisioning::AfterCommit, sessions::end_oauth2_session},
    crypto::Encrypter,
    domain::{
        client_registration,
        protocol::{ClientAuthMethod, GrantType},
    },
    http::AppState,
    storage::{BoxRepository, Client, OAuth2SessionFilter, StorageError},
};

/// RFC 6749 §4.4.
/// Length of a generated client secret: 43 alphanumeric characters, about 256 bits.
const SECRET_LEN: usize = 43;

/// An OAuth 2.0 client.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    /// The client's ID here (ULID), used in paths.
    #[schema(value_type = String, format = "ulid")]
    pub id: Ulid,
    /// The public `client_id` (RFC 6749 §2.2), what requests carry.
    pub client_id: String,
    /// Written from the config file: read-only here.
    #[serde(rename = "static")]
    pub is_static: bool,
    pub token_endpoint_auth_method: String,
    /// Listed in `admin.clients`: may get `urn:mas:admin` by client credentials.
    pub admin: bool,
    /// The registered metadata (RFC 7591 §2).
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClientView {
    fn new(state: &AppState, c: Client) -> Self {
        Self {
            admin: state.settings.admin_clients.contains(&c.client_id),
            id: c.id,
            client_id: c.client_id,
            is_static: c.is_static,
            token_endpoint_auth_method: c.token_endpoint_auth_method.to_string(),
            metadata: c.metadata,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A client just created or updated, with its secret when one was just made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientWithSecret {
    #[serde(flatten)]
    pub client: ClientView,
    /// Shown once, when it is generated (`client_secret_basic`, `client_secret_post`): only an
    /// encrypted copy is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

async fn find_client(repo: &mut BoxRepository, raw_id: &str) -> Result<Client, ApiError> {
    let id = parse_id("client", raw_id)?;
    repo.clients()
        .lookup(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no client `{raw_id}`")))
}

/// List clients, static and dynamic, in ID (creation) order.
#[utoipa::path(
    get, path = "/clients", tag = "clients", operation_id = "listClients",
    params(PageParams),
    responses(
        (status = 200, description = "A page of clients", body = Page<ClientView>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<Page<ClientView>>, ApiError> {
    let clients = state
        .storage
        .reader()
        .await?
        .clients()
        .list_page(paging.after, paging.fetch())
        .await?;
    Ok(Json(Page::of(
        clients,
        paging.limit,
        |c| c.id,
        |c| ClientView::new(&state, c),
    )))
}

/// Get a client.
#[utoipa::path(
    get, path = "/clients/{id}", tag = "clients", operation_id = "getClient",
    params(("id" = String, Path, description = "The client's ID (ULID, not its client_id)")),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    let client = find_client(&mut state.storage.reader().await?, &id).await?;
    Ok(Json(ClientView::new(&state, client)))
}

/// Metadata that passed the rules: what to store.
struct Judged {
    metadata: Map<String, Value>,
    method: ClientAuthMethod,
}

/// Judges client metadata (RFC 7591 §2) by the dynamic registration rules (MSC2966), plus the
/// client credentials grant for confidential clients (RFC 6749 §4.4: "MUST only be used by
/// confidential clients").
fn judge(request: &Value) -> Result<Judged, ApiError> {
    let Value::Object(body) = request else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object of client metadata (RFC 7591 §2)",
        ));
    };
    let grants: Vec<&str> = body
        .get("grant_types")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // The wire values are read as grant types; unknown ones are left to the registration rules
    // (which ignore them, MSC2966).
    let is = |value: &str, grant: GrantType| value.parse() == Ok(grant);
    let asks = |grant: GrantType| grants.iter().any(|g| is(g, grant));
    let credentials = asks(GrantType::ClientCredentials);
    let mut for_rules = body.clone();
    // Without an interactive grant, a service client: the rules of the interactive grants
    // (redirect URIs, the code response type) don't apply to it. The device grant asks for
    // neither, so the other rules are checked as for it.
    let service =
        credentials && !asks(GrantType::AuthorizationCode) && !asks(GrantType::DeviceCode);
    if credentials {
        let interactive: Vec<Value> = if service {
            vec![GrantType::DeviceCode.as_str().into()]
        } else {
            grants
                .iter()
                .filter(|g| !is(g, GrantType::ClientCredentials))
                .map(|g| Value::from(*g))
                .collect()
        };
        for_rules.insert("grant_types".into(), Value::Array(interactive));
        if service {
            for_rules.insert("response_types".into(), Value::Array(Vec::new()));
        }
    }
    let validated = client_registration::validate(&Value::Object(for_rules))
        .map_err(|e| ApiError::bad_request(format!("{}: {}", e.code(), e.description())))?;
    if credentials && validated.token_endpoint_auth_method.is_public() {
        return Err(ApiError::bad_request(
            "the client_credentials grant is for confidential clients only (RFC 6749 §4.4): \
             choose a token_endpoint_auth_method other than `none`",
        ));
    }
    let mut metadata = validated.to_json();
    if credentials {
        let mut grants: Vec<Value> = if service {
            Vec::new()
        } else {
            validated
                .grant_types
                .iter()
                .map(|g| Value::from(*g))
                .collect()
        };
        grants.push(GrantType::ClientCredentials.as_str().into());
        metadata.insert("grant_types".into(), Value::Array(grants));
    }
    Ok(Judged {
        metadata,
        method: validated.token_endpoint_auth_method,
    })
}

/// A fresh client secret, and its encrypted form.
fn new_secret(state: &AppState) -> (String, String) {
    let mut rng = state.storage.entropy().rng.rng();
    let secret: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    let encrypted = Encrypter::new(&state.settings.encryption_key).encrypt(&mut rng, &secret);
    (secret, encrypted)
}

/// Create a client. The body is client metadata (RFC 7591 §2), judged as at dynamic
/// registration (MSC2966: `client_uri` required, URIs under it); `grant_types` may also hold
/// `client_credentials` for a confidential client. A secret is generated for
/// `client_secret_basic`/`client_secret_post` and shown once.
#[utoipa::path(
    post, path = "/clients", tag = "clients", operation_id = "createClient",
    request_body(content = Object, description = "Client metadata (RFC 7591 §2)"),
    responses(
        (status = 201, description = "The new client, with its secret", body = ClientWithSecret),
        (status = 400, description = "The metadata breaks a rule", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    admin: Admin,
    State(state): State<AppState>,
    super::error::Body(body): super::error::Body<Value>,
) -> Result<(StatusCode, Json<ClientWithSecret>), ApiError> {
    let judged = judge(&body)?;
    let entropy = state.storage.entropy();
    let millis = u64::try_from(entropy.clock.now().timestamp_millis()).unwrap_or(0);
    let client_id = Ulid::from_parts(millis, entropy.rng.rng().gen::<u128>()).to_string();
    let secret = judged.method.uses_secret().then(|| new_secret(&state));
    let mut repo = state.storage.begin().await?;
    let client = repo
        .clients()
        .add(
            &client_id,
            false,
            secret.as_ref().map(|(_, enc)| enc.as_str()),
            judged.method,
            &Value::Object(judged.metadata),
        )
        .await?;
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, client_id, "admin: client created");
    Ok((
        StatusCode::CREATED,
        Json(ClientWithSecret {
            client: ClientView::new(&state, client),
            client_secret: secret.map(|(plain, _)| plain),
        }),
    ))
}

/// Replace a dynamic client's metadata (the whole of it, judged as at creation). Its secret
/// stays while the method uses one; a method that starts using one gets a new secret, shown
/// once.
#[utoipa::path(
    put, path = "/clients/{id}", tag = "clients", operation_id = "updateClient",
    params(("id" = String, Path, description = "The client's ID (ULID, not its client_id)")),
    request_body(content = Object, description = "Client metadata (RFC 7591 §2)"),
    responses(
        (status = 200, description = "The client (with a secret only when one was just made)", body = ClientWithSecret),
        (status = 400, description = "The metadata breaks a rule", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A static client (owned by the config file)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    super::error::Body(body): super::error::Body<Value>,
) -> Result<Json<ClientWithSecret>, ApiError> {
    let judged = judge(&body)?;
    let mut repo = state.storage.begin().await?;
    let client = find_client(&mut repo, &id).await?;
    refuse_static(&client)?;
    let (secret, encrypted) = match (judged.method.uses_secret(), client.encrypted_client_secret) {
        (true, Some(kept)) => (None, Some(kept)),
        (true, None) => {
            let (plain, enc) = new_secret(&state);
            (Some(plain), Some(enc))
        }
        (false, _) => (None, None),
    };
    let client = match repo
        .clients()
        .update_dynamic(
            client.id,
            encrypted.as_deref(),
            judged.method,
            &Value::Object(judged.metadata),
        )
        .await
    {
        Ok(client) => client,
        Err(StorageError::Conflict(_)) => return Err(static_client(&id)),
        Err(e) => return Err(e.into()),
    };
    repo.commit().await?;
    tracing::info!(actor = %admin.actor, client_id = %client.client_id, "admin: client updated");
    Ok(Json(ClientWithSecret {
        client: ClientView::new(&state, client),
        client_secret: secret,
    }))
}

fn static_client(id: &str) -> ApiError {
    ApiError::conflict(format!(
        "the client `{id}` is static: change it in the config file (clients) and run \
         `provider config sync`"
    ))
}

fn refuse_static(client: &Client) -> Result<(), ApiError> {
    if client.is_static {
        Err(static_client(&client.id.to_string()))
    } else {
        Ok(())
    }
}

/// Delete a dynamic client. Its sessions end first (their devices are deleted on the
/// homeserver), then it goes with its grants and tokens.
#[utoipa::path(
    delete, path = "/clients/{id}", tag = "clients", operation_id = "deleteClient",
    params(("id" = String, Path, description = "The client's ID (ULID, not its client_id)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A static client (owned by the config file)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    const PAGE: u32 = 200;
    let now = state.storage.entropy().clock.now();
    let mut repo = state.storage.begin().await?;
    let client = find_client(&mut repo, &id).await?;
    refuse_static(&client)?;
    let filter = OAuth2SessionFilter {
        client_id: Some(client.id),
        active: Some(true),
        ..OAuth2SessionFilter::default()
    };
    let mut jobs = AfterCommit::default();
    loop {
        // Each page's sessions are finished before the next page is read, so the filter
        // (active only) moves on by itself.
        let sessions = repo
            .oauth2_sessions()
            .list_page(&filter, None, PAGE)
            .await?;
        if sessions.is_empty() {
            break;
        }
        for session in sessions {
            jobs.add(end_oauth2_session(&mut repo, session.id, now).await?);
        }
    }
    repo.clients().delete(client.id).await?;
    repo.commit().await?;
    jobs.run(&state).await;
    tracing::info!(actor = %admin.actor, client_id = %client.client_id, "admin: client deleted");
    Ok(StatusCode::NO_CONTENT)
}
