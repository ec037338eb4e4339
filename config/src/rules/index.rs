//! Which rules a host can match, so a request is tried only against those: rules naming
//! exactly its host, rules for a domain it is under, and rules naming no host — in the order
//! they are written, so the first match is the same as trying every rule.

use std::collections::HashMap;

use super::{HostPattern, Rule};

/// Rule positions by the host they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleIndex {
    /// `www.example.com` → the rules naming exactly it.
    exact: HashMap<String, Vec<usize>>,
    /// `.example.com` → the rules for `*.example.com`.
    domains: HashMap<String, Vec<usize>>,
    /// Rules that name no host.
    any: Vec<usize>,
}

impl RuleIndex {
    pub(super) fn new<'r>(rules: impl Iterator<Item = &'r Rule>) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (position, rule) in rules.enumerate() {
            match &rule.host {
                None => index.any.push(position),
                Some(HostPattern::Exact(name)) => {
                    index.exact.entry(name.clone()).or_default().push(position)
                }
                Some(HostPattern::Subdomains(suffix)) => index
                    .domains
                    .entry(suffix.clone())
                    .or_default()
                    .push(position),
            }
        }
        index
    }

    /// The positions of the rules `host` (lower-case, without port) can match, in order.
    pub fn candidates(&self, host: &str) -> Candidates<'_> {
        let mut lists = Vec::with_capacity(4);
        lists.push(self.any.as_slice());
        if let Some(exact) = self.exact.get(host) {
            lists.push(exact);
        }
        for (i, _) in host.match_indices('.') {
            if let Some(domain) = self.domains.get(&host[i..]) {
                lists.push(domain);
            }
        }
        Candidates { lists }
    }
}

/// Rule positions from a few ascending lists, merged in ascending order.
pub struct Candidates<'a> {
    lists: Vec<&'a [usize]>,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let (slot, &first) = self
            .lists
            .iter()
            .enumerate()
            .filter_map(|(slot, list)| list.first().map(|first| (slot, first)))
            .min_by_key(|(_, first)| **first)?;
        self.lists[slot] = &self.lists[slot][1..];
        Some(first)
    }
}
