//! Connection-level limits that span connections: how many one client address may hold open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, shared by every listener of the process.
#[derive(Debug, Default)]
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection counted against its address; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Counts one more connection from `ip`, or `None` when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // Only addresses with open connections take memory.
                open.remove(&self.ip);
            }
        }
    }
}

/// An IPv4 client seen through an IPv6 socket counts as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_per_address_and_release() {
        let table = Arc::new(PerIp::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.acquire(a, 2).expect("first");
        let second = table.acquire(mapped, 2).expect("second, same address");
        assert!(table.acquire(a, 2).is_none(), "third is over the cap");
        assert!(
            table.acquire(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert_eq!(table.open(a), 1);
        let third = table.acquire(a, 2).expect("a slot came back");
        drop((second, third));
        assert_eq!(table.open(a), 0);
        assert!(
            table.open.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
