//! MTA-STS (RFC 8461): a domain's `_mta-sts` TXT record announces a policy served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`; in `enforce` mode mail goes only to MX
//! hosts the policy names, over TLS with a valid certificate. Policies are cached for their
//! `max_age` and fetched again when the TXT record's `id` changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use super::dns::Resolver;
use super::tls::Clients;

/// RFC 8461 §3.2: a policy is at most 64 KiB.
const MAX_POLICY: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 8461 §3.2: max_age is at most a year.
const MAX_AGE_CAP: u64 = 31_557_600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<String>,
    pub max_age: u64,
}

impl Policy {
    /// Parses a policy body; `None` when it is not a valid STSv1 policy.
    pub fn parse(text: &str) -> Option<Self> {
        let mut version = None;
        let mut mode = None;
        let mut mx = Vec::new();
        let mut max_age = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = match value {
                        "enforce" => Some(Mode::Enforce),
                        "testing" => Some(Mode::Testing),
                        "none" => Some(Mode::None),
                        _ => return None,
                    }
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                "max_age" => max_age = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return None;
        }
        let mode = mode?;
        if mode != Mode::None && mx.is_empty() {
            return None;
        }
        Some(Self {
            mode,
            mx,
            max_age: max_age?.min(MAX_AGE_CAP),
        })
    }

    pub fn enforces(&self) -> bool {
        self.mode == Mode::Enforce
    }

    /// Whether `host` matches one of the policy's `mx` patterns (`*.` covers one label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

/// The `id` of a `v=STSv1` TXT record.
pub fn record_id(txt: &str) -> Option<String> {
    let mut parts = txt.split(';').map(str::trim);
    if parts.next()? != "v=STSv1" {
        return None;
    }
    parts
        .find_map(|p| p.strip_prefix("id="))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone)]
struct Entry {
    id: String,
    policy: Policy,
    until: Instant,
}

impl Cache {
    /// The policy in force for `domain`, from the cache or fetched; `None` when it has none.
    pub async fn policy(
        &self,
        resolver: &Resolver,
        tls: &Clients,
        domain: &str,
        https_port: u16,
    ) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let txt = match resolver.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => records,
            // DNS trouble: what was cached stays in force (RFC 8461 §5.1).
            Err(error) => {
                debug!(%error, %domain, "MTA-STS TXT lookup failed");
                return cached.map(|c| c.policy);
            }
        };
        let ids: Vec<String> = txt.iter().filter_map(|t| record_id(t)).collect();
        let [id] = ids.as_slice() else {
            // None, or several (RFC 8461 §3.1: then none): a cached policy still applies.
            return cached.map(|c| c.policy);
        };
        if let Some(entry) = &cached
            && entry.id == *id
        {
            return Some(entry.policy.clone());
        }
        match fetch(resolver, tls, &domain, https_port).await {
            Ok(policy) => {
                info!(%domain, mode = ?policy.mode, mx = ?policy.mx, "MTA-STS policy fetched");
                let entry = Entry {
                    id: id.clone(),
                    policy: policy.clone(),
                    until: Instant::now() + Duration::from_secs(policy.max_age),
                };
                if let Ok(mut entries) = self.entries.lock() {
                    entries.insert(domain, entry);
                }
                Some(policy)
            }
            Err(error) => {
                warn!(%error, %domain, "MTA-STS policy fetch failed");
                cached.map(|c| c.policy)
            }
        }
    }

    fn cached(&self, domain: &str) -> Option<Entry> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(domain)
            .filter(|e| e.until > Instant::now())
            .cloned()
    }
}

/// GETs the policy over HTTPS with a verified certificate for `mta-sts.<domain>`.
async fn fetch(
    resolver: &Resolver,
    tls: &Clients,
    domain: &str,
    port: u16,
) -> anyhow::Result<Policy> {
    let host = format!("mta-sts.{domain}");
    let ip = *resolver
        .addresses(&host)
        .await?
        .first()
        .ok_or_else(|| anyhow::anyhow!("{host} has no address"))?;
    let work = async {
        let tcp = TcpStream::connect(SocketAddr::new(ip, port)).await?;
        let name = ServerName::try_from(host.clone())?;
        let mut stream = TlsConnector::from(tls.verifying.clone())
            .connect(name, tcp)
            .await?;
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: kubemail\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take((MAX_POLICY + 16 * 1024) as u64);
        // A server that closes without close_notify still gave us its bytes.
        if let Err(error) = limited.read_to_end(&mut response).await
            && response.is_empty()
        {
            return Err(error.into());
        }
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {host} within {FETCH_TIMEOUT:?}"))??;
    let body = http_body(&response)?;
    Policy::parse(&String::from_utf8_lossy(&body))
        .ok_or_else(|| anyhow::anyhow!("{host} served no valid STSv1 policy"))
}

/// The body of a `200` HTTP/1.x response (chunked or not).
fn http_body(response: &[u8]) -> anyhow::Result<Vec<u8>> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("HTTP status {status:?}");
    }
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| anyhow::anyhow!("short chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        let text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";
        let policy = Policy::parse(text).expect("valid");
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 86400);
        for (host, want) in [
            ("mail.example.com", true),
            ("MAIL.example.com.", true),
            ("a.example.net", true),
            ("b.a.example.net", false),
            ("example.net", false),
            ("other.example.com", false),
        ] {
            assert_eq!(policy.allows(host), want, "{host}");
        }
        for bad in [
            "mode: enforce\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a\n",
        ] {
            assert!(Policy::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn txt_records() {
        assert_eq!(record_id("v=STSv1; id=2024"), Some("2024".into()));
        assert_eq!(record_id("v=STSv1;id=x;"), Some("x".into()));
        assert_eq!(record_id("v=spf1 -all"), None);
        assert_eq!(record_id("v=STSv1;"), None);
    }

    #[test]
    fn bodies() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nversion: STSv1\n";
        assert_eq!(http_body(plain).unwrap(), b"version: STSv1\n");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), b"abcdef");
        assert!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
