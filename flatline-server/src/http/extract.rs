//! Request extractors: the authenticated device and the client's IP address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use flatline_core::account::Account;
use flatline_core::auth::{AuthError, AuthenticatedDevice};
use flatline_core::credentials::DeviceCredentials;
use ipnet::IpNet;

use super::AppState;
use super::error::ApiError;
use crate::chat::{SocketIdentity, UnauthenticatedSocket};

/// A request authenticated with a device's Basic credentials (or tunnelled through that device's authenticated chat
/// socket); anything else is 401.
pub struct Authenticated(pub AuthenticatedDevice);

/// Authenticated when an `Authorization` header is present (and then it must be valid), anonymous otherwise.
pub struct MaybeAuthenticated(pub Option<AuthenticatedDevice>);

/// The device of an authenticated chat socket, reloaded for this request: a removed device, a deleted account, a
/// changed password (the stored credential is no longer the one the socket authenticated against) or a locked
/// credential is a 401, as it would be over HTTP.
async fn socket_device(
    identity: &SocketIdentity,
    state: &AppState,
) -> Result<AuthenticatedDevice, ApiError> {
    let current = |account: &Account| {
        account
            .device(identity.device_id)
            .is_some_and(|d| d.credential == identity.credential && !d.credential.is_locked())
    };
    // A cached account may let the request through; a refusal is decided on the stored one.
    let found = state
        .store
        .account_for_auth(identity.aci)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let account = match found {
        Some(f) if f.cached && !current(&f.account) => state
            .store
            .account(identity.aci)
            .await
            .map_err(|e| ApiError::internal(&e))?,
        other => other.map(|f| f.account),
    }
    .ok_or_else(ApiError::unauthorized)?;
    if !current(&account) {
        state.metrics.auth_failure("socket_stale");
        return Err(ApiError::unauthorized());
    }
    Ok(AuthenticatedDevice {
        account,
        device_id: identity.device_id,
    })
}

async fn authenticate(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<AuthenticatedDevice>, ApiError> {
    // Inside a chat socket the socket's identity counts, never a per-request header (M§1.3).
    if let Some(identity) = parts.extensions.get::<SocketIdentity>() {
        return socket_device(identity, state).await.map(Some);
    }
    if parts.extensions.get::<UnauthenticatedSocket>().is_some() {
        return Ok(None);
    }
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let credentials = value
        .to_str()
        .ok()
        .and_then(|v| DeviceCredentials::from_header(v).ok())
        .ok_or_else(|| {
            state.metrics.auth_failure("malformed");
            ApiError::unauthorized()
        })?;
    let network = limiter_key(resolve_client_ip(parts, state), state.ipv6_limit_prefix);
    match state.auth.authenticate_from(&credentials, &network).await {
        Ok(device) => Ok(Some(device)),
        Err(AuthError::Store(e)) => Err(ApiError::internal(&e)),
        Err(AuthError::RateLimited(r)) => {
            state.metrics.auth_failure("rate_limited");
            tracing::debug!(aci = %credentials.aci, "authentication rate limited");
            Err(r.into())
        }
        Err(e) => {
            let reason = match e {
                AuthError::UnknownAccount => "unknown_account",
                AuthError::UnknownDevice => "unknown_device",
                AuthError::Locked => "locked",
                _ => "wrong_password",
            };
            state.metrics.auth_failure(reason);
            tracing::debug!(aci = %credentials.aci, device = %credentials.device_id, reason, "authentication failed");
            Err(ApiError::unauthorized())
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state)
            .await?
            .map(Authenticated)
            .ok_or_else(ApiError::unauthorized)
    }
}

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(MaybeAuthenticated)
    }
}

/// The client's address: the socket peer, or — only when the peer is a trusted proxy — the nearest untrusted hop
/// in `X-Forwarded-For` (read right to left, so a client cannot spoof it by prepending entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(resolve_client_ip(parts, state)))
    }
}

fn resolve_client_ip(parts: &Parts, state: &AppState) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>();
    client_ip(peer, &forwarded, &state.trusted_proxies)
}

/// The key of every per-IP limiter for the client's network: an IPv4 address as is (IPv4-mapped IPv6 addresses
/// count as IPv4), an IPv6 address as its `/prefix` network (`server.ipv6_limit_prefix`, default 64), because one
/// IPv6 client commonly holds a whole /64 and would otherwise get 2⁶⁴ buckets (F-04).
pub struct ClientNetwork(pub String);

impl FromRequestParts<AppState> for ClientNetwork {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientNetwork(limiter_key(
            resolve_client_ip(parts, state),
            state.ipv6_limit_prefix,
        )))
    }
}

/// See [`ClientNetwork`].
pub fn limiter_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                let net = Ipv6Addr::from(u128::from(v6) & mask);
                format!("{net}/{prefix}")
            }
        },
    }
}

/// Resolves the client address from the peer and the `X-Forwarded-For` header values (in order received).
pub fn client_ip(peer: IpAddr, forwarded_headers: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_headers
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // An unparsable hop ends the chain: trust nothing beyond it.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_keys_group_ipv6_networks() {
        let key = |s: &str, p| limiter_key(s.parse().unwrap(), p);
        assert_eq!(key("192.0.2.1", 64), "192.0.2.1");
        assert_eq!(key("::ffff:192.0.2.1", 64), "192.0.2.1");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 128), "2001:db8:1:2:3:4:5:6/128");
        assert_eq!(key("::1", 64), "::/64");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let cases: &[(&str, &[&str], &str)] = &[
            // Untrusted peer: the header is ignored.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            // Trusted peer: the nearest untrusted hop.
            ("10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            // A client prepending a fake entry does not win.
            ("10.0.0.1", &["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            // Chained trusted proxies are skipped.
            ("10.0.0.1", &["198.51.100.1, 10.0.0.2"], "198.51.100.1"),
            // Several header lines are one list.
            ("10.0.0.1", &["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
            // Garbage ends the chain at the last good hop.
            ("10.0.0.1", &["198.51.100.1, garbage"], "10.0.0.1"),
            // No header: the proxy itself.
            ("10.0.0.1", &[], "10.0.0.1"),
        ];
        for (peer, headers, want) in cases {
            assert_eq!(
                client_ip(ip(peer), headers, &trusted),
                ip(want),
                "{peer} {headers:?}"
            );
        }
    }
}
