//! IPv4 address pools: parsing `A-B` / CIDR entries, membership, and
//! lowest-free allocation.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An inclusive range of IPv4 addresses as integers.
pub(super) type Span = (u32, u32);

/// Parse a canonical IPv4 CIDR (host bits zero). The error is a sentence for
/// a condition message.
pub(super) fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 CIDR such as 10.0.1.0/24"))?;
    if net.trunc() != net {
        return Err(format!(
            "{what} {s:?} has host bits set: write it as {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Parse an IPv4 address.
pub(super) fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// The first and last address of `net` (network and broadcast).
pub(super) fn span_of(net: Ipv4Net) -> Span {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// Whether `addr` is a usable host address of `net`: inside it, and (for
/// prefixes up to /30) neither the network nor the broadcast address.
pub(super) fn is_host(net: Ipv4Net, addr: Ipv4Addr) -> bool {
    net.contains(&addr)
        && (net.prefix_len() > 30 || (addr != net.network() && addr != net.broadcast()))
}

/// Parse one pool entry: an inclusive range `A-B` (A ≤ B) or a CIDR.
pub(super) fn parse_entry(s: &str) -> Result<Span, String> {
    if let Some((a, b)) = s.split_once('-') {
        let a = parse_ip("pool range start", a.trim())?;
        let b = parse_ip("pool range end", b.trim())?;
        if a > b {
            return Err(format!("pool range {s:?} ends before it starts"));
        }
        Ok((u32::from(a), u32::from(b)))
    } else {
        Ok(span_of(parse_cidr("pool entry", s)?))
    }
}

/// A parsed address pool inside an external network. The network's own
/// network and broadcast addresses and its gateway are never handed out,
/// even when an entry covers them.
#[derive(Clone, Debug, Default)]
pub(super) struct Pool {
    /// The entries as written, for messages.
    pub text: Vec<String>,
    /// Sorted, as parsed.
    pub spans: Vec<Span>,
    /// Addresses inside the spans that must never be allocated.
    pub reserved: BTreeSet<u32>,
}

impl Pool {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        !self.reserved.contains(&a) && self.spans.iter().any(|&(lo, hi)| lo <= a && a <= hi)
    }

    /// The lowest address of the pool not in `used`.
    pub fn lowest_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        for &(lo, hi) in &self.spans {
            let mut cand = lo;
            // Walk the used addresses inside the span: the first gap wins.
            for u in used.range(Ipv4Addr::from(lo)..=Ipv4Addr::from(hi)) {
                let u = u32::from(*u);
                while cand < u && self.reserved.contains(&cand) {
                    cand += 1;
                }
                if cand < u {
                    return Some(Ipv4Addr::from(cand));
                }
                if u == u32::MAX {
                    return None;
                }
                cand = cand.max(u + 1);
            }
            while cand <= hi {
                if !self.reserved.contains(&cand) {
                    return Some(Ipv4Addr::from(cand));
                }
                if cand == u32::MAX {
                    break;
                }
                cand += 1;
            }
        }
        None
    }

    /// `a, b` or `(empty)` for messages.
    pub fn describe(&self) -> String {
        if self.text.is_empty() {
            "(empty)".into()
        } else {
            self.text.join(", ")
        }
    }
}

/// The highest host address of `net` that is not in `avoid`, searching
/// downwards from broadcast - 1.
pub(super) fn highest_free_host(net: Ipv4Net, avoid: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (lo, hi) = span_of(net);
    let mut cand = hi.checked_sub(1)?;
    while cand > lo {
        let a = Ipv4Addr::from(cand);
        if !avoid.contains(&a) {
            return Some(a);
        }
        cand -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(entries: &[&str], reserved: &[&str]) -> Pool {
        let mut spans: Vec<Span> = entries.iter().map(|e| parse_entry(e).unwrap()).collect();
        spans.sort();
        Pool {
            text: entries.iter().map(|s| s.to_string()).collect(),
            spans,
            reserved: reserved
                .iter()
                .map(|s| u32::from(s.parse::<Ipv4Addr>().unwrap()))
                .collect(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_as_ranges_or_cidrs() {
        assert_eq!(
            parse_entry("203.0.113.10-203.0.113.12").unwrap(),
            (u32::from(ip("203.0.113.10")), u32::from(ip("203.0.113.12")))
        );
        assert_eq!(
            parse_entry("203.0.113.128/25").unwrap(),
            (
                u32::from(ip("203.0.113.128")),
                u32::from(ip("203.0.113.255"))
            )
        );
        assert!(parse_entry("203.0.113.12-203.0.113.10").is_err());
        assert!(parse_entry("203.0.113.1/24").is_err());
        assert!(parse_entry("nonsense").is_err());
    }

    #[test]
    fn lowest_free_skips_used_and_reserved() {
        let p = pool(
            &["203.0.113.20-203.0.113.21", "203.0.113.0/30"],
            &["203.0.113.0"],
        );
        let mut used = BTreeSet::new();
        assert_eq!(p.lowest_free(&used), Some(ip("203.0.113.1")));
        used.extend([ip("203.0.113.1"), ip("203.0.113.2")]);
        assert_eq!(p.lowest_free(&used), Some(ip("203.0.113.3")));
        used.insert(ip("203.0.113.3"));
        assert_eq!(p.lowest_free(&used), Some(ip("203.0.113.20")));
        used.extend([ip("203.0.113.20"), ip("203.0.113.21")]);
        assert_eq!(p.lowest_free(&used), None);
        assert!(!p.contains(ip("203.0.113.0")));
        assert!(p.contains(ip("203.0.113.21")));
        assert!(!p.contains(ip("203.0.113.22")));
    }

    #[test]
    fn highest_free_host_walks_down() {
        let net: Ipv4Net = "10.0.1.0/29".parse().unwrap();
        let mut avoid = BTreeSet::new();
        assert_eq!(highest_free_host(net, &avoid), Some(ip("10.0.1.6")));
        avoid.extend([ip("10.0.1.6"), ip("10.0.1.5")]);
        assert_eq!(highest_free_host(net, &avoid), Some(ip("10.0.1.4")));
        avoid.extend((1..=4).map(|i| Ipv4Addr::new(10, 0, 1, i)));
        assert_eq!(highest_free_host(net, &avoid), None);
    }
}
