//! A second network host on this machine: a Linux network namespace joined
//! to the root namespace by a veth pair, whose link a test can cut (set
//! down) without closing any socket. Needs root and iproute2 (`ip`);
//! without them the test fails saying so.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with one veth link to the root namespace.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    host_if: String,
    /// The root side's address on the link.
    pub host_ip: Ipv4Addr,
    /// The namespace side's address.
    pub ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {} (network namespaces need root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates a namespace and its link, both up, with a /30 of its own.
    pub fn create() -> Result<Netns, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("gb{pid}n{n}");
        let host_if = format!("gbh{}", pid % 100_000 * 10 + n % 10);
        let ns_if = format!("gbn{}", pid % 100_000 * 10 + n % 10);
        // 10.213.X.Y/30 from the pid and counter: distinct per test.
        let block = (pid.wrapping_mul(16) + n * 4) % (256 * 64);
        let (x, y) = ((block / 64) as u8, ((block % 64) * 4) as u8);
        let host_ip = Ipv4Addr::new(10, 213, x, y + 1);
        let ns_ip = Ipv4Addr::new(10, 213, x, y + 2);
        let netns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        exec(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        exec(&["link", "set", &ns_if, "up"])?;
        exec(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Cuts the link: packets are dropped, sockets stay open.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "down"])
    }

    /// Restores the link.
    pub fn restore(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "up"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
