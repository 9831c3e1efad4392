//! The [`ClientIp`] of a request: the peer of the connection, or the client a trusted reverse
//! proxy names (see [`crate::config::proxies`]).

use std::{convert::Infallible, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};

use crate::{core::rate_limit::ClientIp, http::AppState};

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(peer.map(|peer| {
            state
                .settings
                .trusted_proxies
                .client_ip(peer, &parts.headers)
        })))
    }
}
