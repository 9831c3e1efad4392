//! How a client is shown to people: its name and home page, from its registered metadata
//! (RFC 7591 §2, MSC2966).

use crate::{domain::client_metadata::RegisteredMetadata, storage::Client};

/// A client's name as the pages show it: its registered `client_name`, else its `client_id`.
pub fn client_name(client: &Client) -> String {
    RegisteredMetadata::from_json(&client.metadata)
        .client_name
        .unwrap_or_else(|| client.client_id.clone())
}

/// A client's registered `client_uri`, for a link to it.
pub fn client_uri(client: &Client) -> Option<String> {
    client
        .metadata
        .get("client_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}
