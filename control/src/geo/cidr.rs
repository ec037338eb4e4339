//! Longest-prefix match of client addresses against the configured address blocks.
//!
//! Blocks are either nested or disjoint, so they flatten into a sorted list of boundaries: each
//! boundary starts a run of addresses that share one longest match (or none). A lookup is one
//! binary search, allocation-free, and also tells how far the run extends, which is what an
//! EDNS Client Subnet reply's scope must say.

use std::net::IpAddr;

use verge_config::geo::Cidr;

/// A longest-prefix-match table from address blocks to values (region slots).
#[derive(Debug, Clone, Default)]
pub struct CidrTable {
    v4: Runs,
    v6: Runs,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// The value of the longest matching block, if any.
    pub value: Option<u16>,
    /// The shortest prefix of the address whose every address gets the same `value`: the scope
    /// of an answer that depends on nothing else.
    pub scope: u8,
}

/// Boundaries of one address family, in `bits`-wide numbers.
#[derive(Debug, Clone, Default)]
struct Runs {
    bits: u32,
    /// `(first address of the run, value)`, sorted; always starts with `(0, _)`.
    starts: Vec<(u128, Option<u16>)>,
}

impl CidrTable {
    /// Builds the table; a block listed twice keeps its last value.
    pub fn new(blocks: impl IntoIterator<Item = (Cidr, u16)>) -> CidrTable {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (cidr, value) in blocks {
            match cidr.network() {
                IpAddr::V4(a) => v4.push(range(u128::from(u32::from(a)), cidr.len, 32, value)),
                IpAddr::V6(a) => v6.push(range(u128::from(a), cidr.len, 128, value)),
            }
        }
        CidrTable {
            v4: Runs::build(32, v4),
            v6: Runs::build(128, v6),
        }
    }

    /// The longest match for `addr` (IPv4-mapped IPv6 addresses are looked up as IPv4).
    pub fn lookup(&self, addr: IpAddr) -> Match {
        match addr.to_canonical() {
            IpAddr::V4(a) => self.v4.lookup(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }

    /// Number of runs (for tests and sizing).
    pub fn runs(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

/// Starts a run at `at` (replacing a run that would start there too).
fn mark(starts: &mut Vec<(u128, Option<u16>)>, at: u128, value: Option<u16>) {
    match starts.last_mut() {
        Some(last) if last.0 == at => last.1 = value,
        _ => starts.push((at, value)),
    }
}

/// Ends the innermost open block: the run after it belongs to the block that encloses it.
fn close(starts: &mut Vec<(u128, Option<u16>)>, open: &mut Vec<(u128, u16)>, max: u128) {
    if let Some((last, _)) = open.pop() {
        if last < max {
            mark(starts, last + 1, open.last().map(|o| o.1));
        }
    }
}

/// `(first, last, value)` of a block.
fn range(network: u128, len: u8, bits: u32, value: u16) -> (u128, u128, u16) {
    let host_bits = bits - u32::from(len);
    let size_minus_one = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (network, network | size_minus_one, value)
}

impl Runs {
    fn build(bits: u32, mut blocks: Vec<(u128, u128, u16)>) -> Runs {
        let max = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        // Enclosing blocks before the blocks they contain.
        blocks.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut starts: Vec<(u128, Option<u16>)> = vec![(0, None)];
        // The blocks enclosing the current address, innermost last: `(last address, value)`.
        let mut open: Vec<(u128, u16)> = Vec::new();
        for (first, last, value) in blocks {
            while open.last().is_some_and(|o| o.0 < first) {
                close(&mut starts, &mut open, max);
            }
            if open.last().is_some_and(|o| o.0 == last) && starts.last().map(|s| s.0) == Some(first)
            {
                // The same block again: the later value wins.
                open.pop();
            }
            mark(&mut starts, first, Some(value));
            open.push((last, value));
        }
        while !open.is_empty() {
            close(&mut starts, &mut open, max);
        }
        // Neighbouring runs with the same value are one run.
        starts.dedup_by(|later, earlier| later.1 == earlier.1);
        Runs { bits, starts }
    }

    fn lookup(&self, x: u128) -> Match {
        let i = self.starts.partition_point(|s| s.0 <= x);
        let Some(&(lo, value)) = i.checked_sub(1).and_then(|i| self.starts.get(i)) else {
            return Match {
                value: None,
                scope: 0,
            };
        };
        let next = self.starts.get(i).map(|s| s.0);
        // The block around `x` must exclude the address before the run and the one after it.
        let mut scope = 0;
        if lo > 0 {
            scope = scope.max(self.common_prefix(x, lo - 1) + 1);
        }
        if let Some(next) = next {
            scope = scope.max(self.common_prefix(x, next) + 1);
        }
        Match {
            value,
            scope: u8::try_from(scope.min(self.bits)).unwrap_or(128),
        }
    }

    /// Leading bits `a` and `b` share, counted in this family's width.
    fn common_prefix(&self, a: u128, b: u128) -> u32 {
        ((a ^ b).leading_zeros() - (128 - self.bits)).min(self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(blocks: &[(&str, u16)]) -> CidrTable {
        CidrTable::new(
            blocks
                .iter()
                .map(|(text, value)| (Cidr::parse(text).unwrap(), *value)),
        )
    }

    fn at(t: &CidrTable, addr: &str) -> (Option<u16>, u8) {
        let m = t.lookup(addr.parse().unwrap());
        (m.value, m.scope)
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = table(&[
            ("127.0.0.0/8", 9),
            ("127.1.0.0/16", 1),
            ("127.1.2.0/24", 2),
            ("127.2.0.0/16", 3),
        ]);
        assert_eq!(at(&t, "127.1.2.3").0, Some(2));
        assert_eq!(at(&t, "127.1.3.3").0, Some(1));
        assert_eq!(at(&t, "127.2.255.255").0, Some(3));
        assert_eq!(at(&t, "127.3.0.1").0, Some(9));
        assert_eq!(at(&t, "10.0.0.1").0, None);
        assert_eq!(at(&t, "128.0.0.0").0, None);
        assert_eq!(at(&t, "::ffff:127.1.2.3").0, Some(2));
    }

    #[test]
    fn the_scope_is_the_widest_block_with_the_same_answer() {
        let t = table(&[("127.1.0.0/16", 1), ("127.1.2.0/24", 2)]);
        // Inside the /24: the /24 itself.
        assert_eq!(at(&t, "127.1.2.200"), (Some(2), 24));
        // In the /16 next to the /24: 127.1.3.0/24 is the widest block clear of 127.1.2.0/24.
        assert_eq!(at(&t, "127.1.3.1"), (Some(1), 24));
        // Far from it: 127.1.128.0/17.
        assert_eq!(at(&t, "127.1.200.1"), (Some(1), 17));
        // Unmatched space: 0.0.0.0/2 holds no block.
        assert_eq!(at(&t, "10.0.0.1"), (None, 2));
    }

    #[test]
    fn ipv6_blocks_and_the_whole_space_work() {
        let t = table(&[("::/0", 7), ("2001:db8::/32", 1), ("0.0.0.0/0", 5)]);
        assert_eq!(at(&t, "2001:db8::1"), (Some(1), 32));
        assert_eq!(at(&t, "2001:db9::1").0, Some(7));
        assert_eq!(at(&t, "192.0.2.1"), (Some(5), 0));
        assert_eq!(at(&t, "255.255.255.255"), (Some(5), 0));
        assert_eq!(at(&t, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").0, Some(7));
    }

    #[test]
    fn an_empty_table_matches_nothing_with_scope_zero() {
        let t = CidrTable::default();
        assert_eq!(at(&t, "127.0.0.1"), (None, 0));
        assert_eq!(at(&t, "::1"), (None, 0));
    }

    #[test]
    fn a_flat_table_agrees_with_a_naive_longest_match() {
        let blocks = [
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.1.0/24", 3),
            ("10.1.1.128/25", 4),
            ("10.2.0.0/15", 5),
            ("11.0.0.0/8", 6),
            ("10.1.1.255/32", 7),
        ];
        let t = table(&blocks);
        let parsed: Vec<(Cidr, u16)> = blocks
            .iter()
            .map(|(s, v)| (Cidr::parse(s).unwrap(), *v))
            .collect();
        let mut x: u32 = 0x0900_0000;
        while x < 0x0c00_0000 {
            let addr = IpAddr::V4(x.into());
            let naive = parsed
                .iter()
                .filter(|(c, _)| Cidr { addr, len: c.len }.network() == c.addr)
                .max_by_key(|(c, _)| c.len)
                .map(|(_, v)| *v);
            assert_eq!(t.lookup(addr).value, naive, "{addr}");
            x += 0x1_0001 + (x % 7) * 0x3d;
        }
    }
}
