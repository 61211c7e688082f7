//! Client self-configuration for the hosted domains, from the same data as their DNS records:
//! Thunderbird autoconfig, Outlook autodiscover (POX), an Apple `.mobileconfig` and the MTA-STS
//! policy. Served on the operations HTTP port (behind an ingress that terminates TLS) and on the
//! HTTPS listener (`--listen https=ADDR`, the server's certificate; `https.rs`).
//!
//! A domain that is not hosted gets 404, so the documents say nothing about other domains.

mod https;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mail_provision::clientconfig;
use mail_provision::dns::{DnsSettings, mta_sts_policy};

use crate::Context;

pub use https::serve as serve_https;

/// An autodiscover request is a few hundred bytes; nothing larger is read.
const BODY_LIMIT: usize = 16 * 1024;

/// The client-configuration routes; everything else is 404.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route("/autodiscover/autodiscover.xml", post(autodiscover))
        .route("/Autodiscover/Autodiscover.xml", post(autodiscover))
        .route("/apple/mobileconfig", get(mobileconfig))
        .route("/.well-known/mta-sts.txt", get(mta_sts))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

/// The `emailaddress` parameter of a query string, decoded.
fn email_parameter(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "emailaddress")
        .map(|(_, value)| value.into_owned())
}

fn settings(ctx: &Context) -> DnsSettings {
    DnsSettings {
        mail_host: ctx.settings.hostname.clone(),
        ttl: 0,
    }
}

/// A refused request: the status and a line saying why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn reply(status: StatusCode, text: &str) -> Response {
    Refusal(status, text.to_string()).into_response()
}

/// The request's host name without the port, lower case.
fn host(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let name = match value.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => value,
    };
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// `email` with its domain lower case (as people type it into a client), checked.
fn address(email: &str) -> Result<(String, String), Refusal> {
    let email = email.trim();
    let email = match email.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => email.to_string(),
    };
    match mail_provision::check_address(&email) {
        Ok((_, domain)) => Ok((email.clone(), domain.to_string())),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("emailaddress {e}"),
        )),
    }
}

/// 404 unless `domain` is hosted; 503 when the database does not answer.
async fn hosted(ctx: &Context, domain: &str) -> Result<(), Refusal> {
    match mail_provision::domain_hosted(ctx.store.db(), domain).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal(
            StatusCode::NOT_FOUND,
            "domain not hosted here".into(),
        )),
        Err(err) => {
            tracing::warn!(%err, domain, "client configuration: database lookup failed");
            Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "try again later".into(),
            ))
        }
    }
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Thunderbird asks with `?emailaddress=`; without it the domain is the host's after
/// `autoconfig.`.
async fn autoconfig(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let email = email_parameter(query.as_deref());
    let domain = match (email.as_deref(), host(&headers)) {
        (Some(email), _) => match address(email) {
            Ok((_, domain)) => domain,
            Err(refusal) => return refusal.into_response(),
        },
        (None, Some(host)) => match host.strip_prefix("autoconfig.") {
            Some(domain) => domain.to_string(),
            None => return reply(StatusCode::BAD_REQUEST, "emailaddress is required"),
        },
        (None, None) => return reply(StatusCode::BAD_REQUEST, "emailaddress is required"),
    };
    if let Err(refusal) = hosted(&ctx, &domain).await {
        return refusal.into_response();
    }
    xml(clientconfig::thunderbird_autoconfig(
        &domain,
        &settings(&ctx),
    ))
}

/// The `<EMailAddress>` of an Outlook POX request.
fn requested_address(body: &str) -> Option<&str> {
    let start = body.find("<EMailAddress>")? + "<EMailAddress>".len();
    let len = body[start..].find("</EMailAddress>")?;
    Some(body[start..start + len].trim())
}

async fn autodiscover(State(ctx): State<Arc<Context>>, body: String) -> Response {
    let Some(email) = requested_address(&body) else {
        return reply(StatusCode::BAD_REQUEST, "no EMailAddress in the request");
    };
    let (email, domain) = match address(email) {
        Ok(pair) => pair,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = hosted(&ctx, &domain).await {
        return refusal.into_response();
    }
    xml(clientconfig::outlook_autodiscover(&email, &settings(&ctx)))
}

async fn mobileconfig(State(ctx): State<Arc<Context>>, RawQuery(query): RawQuery) -> Response {
    let email = email_parameter(query.as_deref());
    let Some(email) = email.as_deref() else {
        return reply(StatusCode::BAD_REQUEST, "emailaddress is required");
    };
    let (email, domain) = match address(email) {
        Ok(pair) => pair,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = hosted(&ctx, &domain).await {
        return refusal.into_response();
    }
    let filename = format!("attachment; filename=\"{domain}.mobileconfig\"");
    (
        [
            (
                header::CONTENT_TYPE,
                "application/x-apple-aspen-config".to_string(),
            ),
            (header::CONTENT_DISPOSITION, filename),
        ],
        clientconfig::apple_mobileconfig(&email, &settings(&ctx)),
    )
        .into_response()
}

/// RFC 8461 §3.2: the policy is at `https://mta-sts.<domain>/.well-known/mta-sts.txt`, so the
/// domain is the Host header's after `mta-sts.`.
async fn mta_sts(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    let Some(domain) = host(&headers)
        .as_deref()
        .and_then(|h| h.strip_prefix("mta-sts."))
        .map(str::to_string)
    else {
        return reply(StatusCode::NOT_FOUND, "ask mta-sts.<domain>");
    };
    if let Err(refusal) = hosted(&ctx, &domain).await {
        return refusal.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain")],
        mta_sts_policy(&settings(&ctx)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_without_port_and_case() {
        for (value, want) in [
            ("mta-sts.Example.COM", Some("mta-sts.example.com")),
            ("mta-sts.example.com:8443", Some("mta-sts.example.com")),
            ("mta-sts.example.com.", Some("mta-sts.example.com")),
            ("[::1]:8443", Some("[::1]")),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, value.parse().unwrap());
            assert_eq!(host(&headers).as_deref(), want, "{value}");
        }
        assert_eq!(host(&HeaderMap::new()), None);
    }

    #[test]
    fn the_email_parameter_is_decoded() {
        for (query, want) in [
            (Some("emailaddress=a%40b.c"), Some("a@b.c")),
            (Some("x=1&emailaddress=a+b@c.d"), Some("a b@c.d")),
            (Some("email=a@b.c"), None),
            (None, None),
        ] {
            assert_eq!(email_parameter(query).as_deref(), want, "{query:?}");
        }
    }

    #[test]
    fn the_address_of_a_pox_request() {
        let body = "<Autodiscover><Request><EMailAddress> a@b.c </EMailAddress>\
                    <AcceptableResponseSchema>x</AcceptableResponseSchema></Request></Autodiscover>";
        assert_eq!(requested_address(body), Some("a@b.c"));
        assert_eq!(requested_address("<EMailAddress>a@b.c"), None);
        assert_eq!(requested_address(""), None);
    }
}
