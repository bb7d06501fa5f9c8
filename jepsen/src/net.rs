//! Network partitions between the brokers' loopback hosts, with iptables: one chain per run,
//! jumped to from `INPUT`, holding one `DROP` rule per blocked (source, destination) pair of
//! broker addresses. Brokers make their peer connections from their own address, so the rules
//! see broker-to-broker traffic by host; clients connect from 127.0.0.1 and are never blocked.
//!
//! The chain is removed when the [`Firewall`] is dropped, also on a panic. Needs root and the
//! `iptables` command.

use std::net::Ipv4Addr;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running iptables {args}: {reason} (the partition nemeses need root and iptables: apt-get install iptables)")]
    Iptables { args: String, reason: String },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
    /// The blocked (source, destination) pairs in force.
    blocked: Vec<(Ipv4Addr, Ipv4Addr)>,
}

fn iptables(args: &[&str]) -> Result<(), FirewallError> {
    let fail = |reason: String| FirewallError::Iptables { args: args.join(" "), reason };
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() { Ok(()) } else { Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string())) }
}

impl Firewall {
    /// Creates this run's chain (named after `tag`, at most 20 characters are kept) and jumps to
    /// it from `INPUT`.
    pub fn new(tag: &str) -> Result<Self, FirewallError> {
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect();
        let chain = format!("RMQJ-{tag}");
        // A chain left by a crashed run of the same tag: remove it first.
        let _ = iptables(&["-D", "INPUT", "-j", &chain]);
        let _ = iptables(&["-F", &chain]);
        let _ = iptables(&["-X", &chain]);
        iptables(&["-N", &chain])?;
        let fw = Firewall { chain, blocked: Vec::new() };
        iptables(&["-I", "INPUT", "-j", &fw.chain])?;
        Ok(fw)
    }

    /// Drops every packet from `from` to `to`.
    pub fn block(&mut self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), FirewallError> {
        if from == to || self.blocked.contains(&(from, to)) {
            return Ok(());
        }
        iptables(&["-A", &self.chain, "-s", &from.to_string(), "-d", &to.to_string(), "-j", "DROP"])?;
        self.blocked.push((from, to));
        Ok(())
    }

    /// Blocks both directions between every host of `a` and every host of `b`.
    pub fn cut(&mut self, a: &[Ipv4Addr], b: &[Ipv4Addr]) -> Result<(), FirewallError> {
        for &x in a {
            for &y in b {
                self.block(x, y)?;
                self.block(y, x)?;
            }
        }
        Ok(())
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&mut self) -> Result<(), FirewallError> {
        iptables(&["-F", &self.chain])?;
        self.blocked.clear();
        Ok(())
    }

    pub fn blocked(&self) -> &[(Ipv4Addr, Ipv4Addr)] {
        &self.blocked
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "INPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        if let Err(e) = iptables(&["-X", &self.chain]) {
            tracing::error!(chain = %self.chain, error = %e, "could not remove the partition chain; remove it by hand");
        }
    }
}
