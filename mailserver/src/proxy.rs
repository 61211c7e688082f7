//! The PROXY protocol (HAProxy, versions 1 and 2): a load balancer in front of us prepends the
//! client's real address to the connection. Accepted only from trusted networks; read with
//! exact-size reads so nothing after the header is consumed, and so a header split across TCP
//! segments works.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 octets that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 1 header, CRLF included.
const V1_MAX: usize = 107;

/// What a header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The client's address; `None` for `UNKNOWN` (v1) and `LOCAL` (v2, a health check).
    pub source: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("not a PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("connection closed inside the PROXY header")]
    Closed,
}

/// Whether the first bytes a client sent start like a PROXY header.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    let v1 = b"PROXY ";
    let n = bytes.len().min(v1.len());
    let m = bytes.len().min(V2_SIGNATURE.len());
    n > 0 && (bytes[..n] == v1[..n] || bytes[..m] == V2_SIGNATURE[..m])
}

/// Reads one header (v1 or v2) from `io`, and nothing after it.
pub async fn read_header<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, ProxyError> {
    let mut start = [0u8; 12];
    read_exact(io, &mut start[..6]).await?;
    if &start[..6] == b"PROXY " {
        return read_v1(io).await;
    }
    if start[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyError::Missing);
    }
    read_exact(io, &mut start[6..]).await?;
    if start != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let mut head = [0u8; 4];
    read_exact(io, &mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    // At most 64 KiB, bounded by the u16.
    let mut body = vec![0u8; len];
    read_exact(io, &mut body).await?;
    parse_v2(head[0], head[1], &body)
}

async fn read_exact<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), ProxyError> {
    io.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyError::Closed)
}

/// The rest of a v1 line after `PROXY `, read one octet at a time up to its LF.
async fn read_v1<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX);
    loop {
        let mut byte = [0u8; 1];
        read_exact(io, &mut byte).await?;
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
        if line.len() + 6 >= V1_MAX {
            return Err(ProxyError::Malformed("v1 line too long"));
        }
    }
    parse_v1(&line)
}

/// Parses `TCP4 src dst sport dport\r\n` (what follows `PROXY `).
pub fn parse_v1(rest: &[u8]) -> Result<Header, ProxyError> {
    let line = rest
        .strip_suffix(b"\r\n")
        .ok_or(ProxyError::Malformed("v1 line must end in CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let mut fields = line.split(' ');
    match fields.next() {
        Some("UNKNOWN") => return Ok(Header { source: None }),
        Some("TCP4" | "TCP6") => {}
        _ => return Err(ProxyError::Malformed("v1 protocol")),
    }
    let parts: Vec<&str> = fields.collect();
    let [src, _dst, sport, _dport] = parts.as_slice() else {
        return Err(ProxyError::Malformed("v1 field count"));
    };
    let ip = IpAddr::from_str(src).map_err(|_| ProxyError::Malformed("v1 source address"))?;
    let port = sport
        .parse::<u16>()
        .map_err(|_| ProxyError::Malformed("v1 source port"))?;
    Ok(Header {
        source: Some(SocketAddr::new(ip, port)),
    })
}

/// Parses a v2 header's version/command and family octets and its address block.
pub fn parse_v2(ver_cmd: u8, family: u8, body: &[u8]) -> Result<Header, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    match ver_cmd & 0x0f {
        // LOCAL: the proxy's own connection (a health check); the socket address stands.
        0 => return Ok(Header { source: None }),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command")),
    }
    let source = match family >> 4 {
        1 => {
            let a: &[u8; 12] = body
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv4 block short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        2 => {
            let a: &[u8; 36] = body
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv6 block short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC or UNIX: no address we can use.
        _ => None,
    };
    Ok(Header { source })
}

/// A list of networks (`10.0.0.0/8`, `2001:db8::/32`, or single addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.0.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix(
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                bits,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix(u128::from(n), u128::from(a), bits),
            _ => false,
        })
    }
}

fn prefix(net: u128, addr: u128, bits: u8) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    };
    net & mask == addr & mask
}

impl FromStr for Networks {
    type Err = String;

    /// Comma-separated networks; empty means none.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let ip = IpAddr::from_str(addr).map_err(|_| format!("bad network address {item:?}"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or_else(|| format!("bad prefix length in {item:?}"))?,
                None => max,
            };
            nets.push((ip, bits));
        }
        Ok(Networks(nets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_table() {
        let cases: Vec<(&str, Result<Option<&str>, ()>)> = vec![
            (
                "TCP4 192.0.2.7 10.0.0.1 40000 25\r\n",
                Ok(Some("192.0.2.7:40000")),
            ),
            ("TCP6 2001:db8::1 ::1 5 25\r\n", Ok(Some("[2001:db8::1]:5"))),
            ("UNKNOWN\r\n", Ok(None)),
            ("UNKNOWN ffff::1 ::1 1 2\r\n", Ok(None)),
            ("TCP4 192.0.2.7 10.0.0.1 40000 25\n", Err(())),
            ("TCP4 192.0.2.7 10.0.0.1 40000\r\n", Err(())),
            ("TCP4 nothere 10.0.0.1 1 25\r\n", Err(())),
            ("TCP4 192.0.2.7 10.0.0.1 70000 25\r\n", Err(())),
            ("UDP4 192.0.2.7 10.0.0.1 1 25\r\n", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_v1(input.as_bytes())
                .map(|h| h.source.map(|s| s.to_string()))
                .map_err(|_| ());
            assert_eq!(got, want.map(|o| o.map(str::to_string)), "{input:?}");
        }
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([cmd, family]);
        h.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend(body);
        h
    }

    #[tokio::test]
    async fn v2_read_one_octet_at_a_time_and_nothing_more() {
        let mut body = vec![203, 0, 113, 9, 10, 0, 0, 1, 0x9c, 0x40, 0, 25];
        body.extend([0x04, 0, 1, 0xaa]); // a TLV, skipped
        let mut wire = v2(0x21, 0x11, &body);
        wire.extend(b"EHLO x\r\n");
        let (mut client, mut server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in wire {
                client.write_all(&[b]).await.unwrap();
            }
            client
        });
        let header = read_header(&mut server).await.unwrap();
        assert_eq!(header.source, Some("203.0.113.9:40000".parse().unwrap()));
        let mut rest = [0u8; 8];
        server.read_exact(&mut rest).await.unwrap();
        let _client = writer.await.unwrap();
        assert_eq!(
            &rest, b"EHLO x\r\n",
            "the header reader took nothing after the header"
        );
    }

    #[test]
    fn v2_table() {
        let v6: Vec<u8> = (0..36).collect();
        assert_eq!(
            parse_v2(0x21, 0x21, &v6).unwrap().source,
            Some(SocketAddr::new(
                Ipv6Addr::from(<[u8; 16]>::try_from(&v6[..16]).unwrap()).into(),
                u16::from_be_bytes([32, 33])
            ))
        );
        assert_eq!(parse_v2(0x20, 0x00, &[]).unwrap().source, None, "LOCAL");
        assert!(parse_v2(0x21, 0x11, &[1, 2, 3]).is_err(), "short block");
        assert!(
            parse_v2(0x11, 0x11, &[0; 12]).is_err(),
            "version 1 in a v2 header"
        );
        assert!(parse_v2(0x22, 0x11, &[0; 12]).is_err(), "unknown command");
    }

    #[tokio::test]
    async fn not_a_header() {
        let mut input: &[u8] = b"EHLO client\r\n";
        assert_eq!(read_header(&mut input).await, Err(ProxyError::Missing));
        let mut input: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"; // no line end
        assert_eq!(read_header(&mut input).await, Err(ProxyError::Closed));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let mut input: &[u8] = long.as_bytes();
        assert!(matches!(
            read_header(&mut input).await,
            Err(ProxyError::Malformed(_))
        ));
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(&V2_SIGNATURE[..4]));
        assert!(!looks_like_header(b"EHLO"));
        assert!(!looks_like_header(b""));
    }

    #[test]
    fn networks() {
        let nets: Networks = "10.0.0.0/8, 192.0.2.1,2001:db8::/32".parse().unwrap();
        for (ip, want) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.1", true),
            ("192.0.2.2", false),
            ("::ffff:10.9.9.9", true),
            ("2001:db8:1::5", true),
            ("2001:db9::1", false),
        ] {
            assert_eq!(nets.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert!("10.0.0.0/33".parse::<Networks>().is_err());
        assert!("nonsense".parse::<Networks>().is_err());
        assert!("".parse::<Networks>().unwrap().is_empty());
        assert!(
            "0.0.0.0/0"
                .parse::<Networks>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
