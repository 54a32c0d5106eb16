//! Phase 1's connection limits: how many downstream connections may be open at once, in all
//! (`max_connections`) and per client (`max_connections_per_client`), so a flood can't grow
//! memory without bound and one noisy client can't take every slot.
//!
//! At the global limit the accept loops stop accepting (the kernel's backlog holds the rest, and
//! they are served as slots free up). A TCP client over its own limit is answered 503 and its
//! connection closed at once, while other clients carry on. A client is its IP address; IPv6
//! clients are counted per /64, the block one host usually holds; every loopback address
//! (127.0.0.0/8, `::1`) is one client, this machine (otherwise one local process could take every
//! slot by dialling from 127.0.0.2, 127.0.0.3, ...). Unix-socket connections have no
//! address and count only towards the global limit (whoever may open the socket is trusted by
//! its file mode).
//!
//! The per-client table is touched twice per connection (accept and close), never per request.
//! It holds an entry only while that client has a connection open, so it never outgrows the
//! global limit: a client's entry goes when its last connection closes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits shared by every listener and worker of one credproxy.
pub struct ConnLimits {
    global: Arc<Semaphore>,
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, usize>>,
}

impl std::fmt::Debug for ConnLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimits")
            .field("available", &self.global.available_permits())
            .field("per_client", &self.per_client)
            .finish()
    }
}

/// A client's share of the per-client limit, given back when dropped.
pub struct ClientSlot {
    limits: Arc<ConnLimits>,
    client: IpAddr,
}

impl ConnLimits {
    pub fn new(max_connections: usize, max_connections_per_client: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            global: Arc::new(Semaphore::new(max_connections)),
            per_client: max_connections_per_client,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// A slot under the global limit, waiting for one to free up; `None` once closed.
    pub async fn global_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.global.clone().acquire_owned().await.ok()
    }

    /// A slot for a connection from `peer`, or `None` when that client is at its limit.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        let client = client_key(peer);
        let mut clients = self.clients.lock();
        let open = clients.entry(client).or_insert(0);
        if *open >= self.per_client {
            return None;
        }
        *open += 1;
        Some(ClientSlot {
            limits: self.clone(),
            client,
        })
    }

    /// Connections open from `peer`'s client (for tests and diagnostics).
    pub fn open_from(&self, peer: IpAddr) -> usize {
        self.clients
            .lock()
            .get(&client_key(peer))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.limits.clients.lock();
        if let Some(open) = clients.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// What counts as one client: this machine (any loopback address), an IPv4 address
/// (IPv4-mapped IPv6 included), or an IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    }
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// What a client over its limit reads before the connection is closed (RFC 9209 Proxy-Status,
/// the JSON body of every credproxy error).
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
proxy-status: credproxy; error=http_request_denied; details=\"too many connections from this client\"\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 116\r\n\
\r\n\
{\"error\":\"too_many_connections\",\"message\":\"too many open connections from this client (max_connections_per_client)\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_slots_are_counted_and_given_back() {
        let limits = ConnLimits::new(10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "a is at its limit");
        let _b1 = limits.admit(b).expect("others are unaffected");
        drop(a1);
        assert_eq!(limits.open_from(a), 1);
        let _a3 = limits.admit(a).expect("a slot came back");
        assert!(limits.admit(a).is_none());
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_slash_64s() {
        let limits = ConnLimits::new(10, 1);
        let _x = limits.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(limits.admit("2001:db8::2".parse().unwrap()).is_none());
        assert!(limits.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        let _m = limits.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert!(limits.admit("10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(limits.clients.lock().len(), 2);
    }

    /// Issue 14 item 9: dialling from 127.0.0.2, 127.0.0.3, ... is still this machine, one
    /// client; and the table only holds clients with a connection open.
    #[test]
    fn every_loopback_address_is_one_client_and_the_table_empties() {
        let limits = ConnLimits::new(100_000, 3);
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(
                limits
                    .admit(format!("127.0.{i}.7").parse().unwrap())
                    .unwrap(),
            );
        }
        assert!(limits.admit("127.9.9.9".parse().unwrap()).is_none());
        assert!(limits.admit("::1".parse().unwrap()).is_none());
        assert!(limits.admit("::ffff:127.0.0.1".parse().unwrap()).is_none());
        for i in 0..50_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            held.push(limits.admit(IpAddr::from([10, b, c, d])).unwrap());
        }
        assert_eq!(limits.clients.lock().len(), 50_001);
        drop(held);
        assert!(
            limits.clients.lock().is_empty(),
            "no entry outlives its connections"
        );
    }

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "too_many_connections");
    }
}
