//! Per-client rate limits: a [`RateLimit`] counts the requests of each
//! client (its peer address; an IPv6 client by its /64, what one host is
//! usually given) and answers 429 with `Retry-After` beyond the quota.
//!
//! Generic on purpose: a handler (or [`RateLimit::layer`] around a route)
//! calls [`RateLimit::check`] with the peer address; nothing here knows
//! which endpoint it guards. It trusts no `X-Forwarded-For`: behind a proxy
//! every client shares the proxy's address (docs/adr/0010).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::errors::AppError;

/// Above this many clients remembered, the ones whose quota is whole again
/// are forgotten, so that many addresses cannot grow the table without bound.
const FORGET_ABOVE: usize = 10_000;

/// A rate limit per client; cheap to clone (one shared table).
#[derive(Clone)]
pub(crate) struct RateLimit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    what: &'static str,
    /// When the table was last swept of quiet clients (seconds since `epoch`).
    swept: Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").field("what", &self.what).field("on", &self.limiter.is_some()).finish()
    }
}

impl RateLimit {
    /// At most `per_minute` requests of `what` per client per minute, all of
    /// them at once if the client was quiet (`None`: no limit).
    pub(crate) fn per_minute(per_minute: Option<NonZeroU32>, what: &'static str) -> RateLimit {
        let limiter = per_minute.map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
        RateLimit { limiter, what, swept: Arc::default(), epoch: std::time::Instant::now() }
    }

    /// Counts one request of the client at `peer`: `Ok` within its quota,
    /// else the 429 to answer ([`Limited`] is a response).
    pub(crate) fn check(&self, peer: IpAddr) -> Result<(), Limited> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        // A sweep walks the whole table: at most one a second, however many
        // clients are still within their minute.
        if limiter.len() > FORGET_ABOVE {
            use std::sync::atomic::Ordering;
            let now = self.epoch.elapsed().as_secs() + 1;
            let last = self.swept.load(Ordering::Relaxed);
            if now > last && self.swept.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                limiter.retain_recent();
            }
        }
        match limiter.check_key(&client(peer)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
                tracing::debug!(%peer, what = self.what, seconds, "rate limited");
                Err(Limited { seconds, what: self.what })
            }
        }
    }

    /// Middleware applying this limit to every request of the routes it
    /// wraps (`route_layer(axum::middleware::from_fn(move |r, n| limit.clone().layer(r, n)))`).
    /// Needs the server to record peers (`into_make_service_with_connect_info`).
    pub(crate) async fn layer(self, request: Request, next: Next) -> Response {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        match peer.map(|ip| self.check(ip)) {
            Some(Err(refused)) => refused.into_response(),
            _ => next.run(request).await,
        }
    }
}

/// A request beyond its client's quota: answered 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// Whole seconds until the client may send again (at least 1).
    pub(crate) seconds: u32,
    what: &'static str,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let Limited { seconds, what } = self;
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what} from this address; retry after {seconds} s"),
        )
        .retry_after(seconds)
        .into_response()
    }
}

/// The key of the client at `ip`: an IPv4 address, or an IPv6 /64 prefix
/// (an IPv4-mapped IPv6 address counts as the IPv4 address).
pub(super) fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_beyond_its_quota_gets_429_with_retry_after_and_others_do_not() {
        let limit = RateLimit::per_minute(NonZeroU32::new(2), "registrations");
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        assert!(limit.check(a).is_ok() && limit.check(a).is_ok());
        let refused = limit.check(a).expect_err("third in a minute");
        assert!((1..=31).contains(&refused.seconds), "{refused:?}");
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], refused.seconds.to_string().as_str());
        assert!(limit.check(b).is_ok(), "another client has its own quota");
        let off = RateLimit::per_minute(None, "registrations");
        assert!((0..100).all(|_| off.check(a).is_ok()));
    }

    #[test]
    fn an_ipv6_client_is_its_64_prefix_and_a_mapped_ipv4_is_the_ipv4() {
        let key = |s: &str| client(s.parse().expect("ip"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
    }
}
