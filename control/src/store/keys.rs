//! The keys control writes in etcd, all under `store.prefix` (`P`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `P/purge/head` | the newest purge's sequence number, decimal | none |
//! | `P/purge/log/{seq:020}` | a [`crate::store::shared::StoredPurge`] (JSON) | none |
//! | `P/leader` | the leader replica's name | the leader's |
//! | `P/table` | the routing table in force (JSON) | none |
//! | `P/nodes/{id}` | a node's registration and the replica it is connected to (JSON) | that replica's |
//! | `P/replicas/{name}` | a replica's report: its nodes' latest heartbeats (JSON) | its own |
//! | `P/acks/{name}` | the purges its nodes have applied, by node (JSON) | its own |

/// What one key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Head,
    Purge(u64),
    Leader,
    Table,
    Node(String),
    Replica(String),
    Acks(String),
    Other,
}

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Every key control writes starts with this (`P/`).
    pub fn all(&self) -> Vec<u8> {
        format!("{}/", self.prefix).into_bytes()
    }

    pub fn head(&self) -> Vec<u8> {
        format!("{}/purge/head", self.prefix).into_bytes()
    }

    pub fn purge(&self, seq: u64) -> Vec<u8> {
        format!("{}/purge/log/{seq:020}", self.prefix).into_bytes()
    }

    pub fn purges(&self) -> Vec<u8> {
        format!("{}/purge/log/", self.prefix).into_bytes()
    }

    pub fn leader(&self) -> Vec<u8> {
        format!("{}/leader", self.prefix).into_bytes()
    }

    pub fn table(&self) -> Vec<u8> {
        format!("{}/table", self.prefix).into_bytes()
    }

    pub fn node(&self, id: &str) -> Vec<u8> {
        format!("{}/nodes/{id}", self.prefix).into_bytes()
    }

    pub fn replica(&self, name: &str) -> Vec<u8> {
        format!("{}/replicas/{name}", self.prefix).into_bytes()
    }

    pub fn acks(&self, name: &str) -> Vec<u8> {
        format!("{}/acks/{name}", self.prefix).into_bytes()
    }

    /// What `key` is; [`Key::Other`] for keys outside the layout (never acted on).
    pub fn parse(&self, key: &[u8]) -> Key {
        let Ok(key) = std::str::from_utf8(key) else {
            return Key::Other;
        };
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Key::Other;
        };
        match rest {
            "purge/head" => Key::Head,
            "leader" => Key::Leader,
            "table" => Key::Table,
            _ => {
                if let Some(seq) = rest.strip_prefix("purge/log/") {
                    return match seq.parse::<u64>() {
                        Ok(n) if seq.len() == 20 => Key::Purge(n),
                        _ => Key::Other,
                    };
                }
                if let Some(id) = rest.strip_prefix("nodes/") {
                    return Key::Node(id.to_string());
                }
                if let Some(name) = rest.strip_prefix("replicas/") {
                    return Key::Replica(name.to_string());
                }
                if let Some(name) = rest.strip_prefix("acks/") {
                    return Key::Acks(name.to_string());
                }
                Key::Other
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_written_reads_back_as_what_it_is() {
        let keys = Keys::new("/verge");
        assert_eq!(keys.parse(&keys.head()), Key::Head);
        assert_eq!(keys.parse(&keys.purge(42)), Key::Purge(42));
        assert_eq!(keys.parse(&keys.leader()), Key::Leader);
        assert_eq!(keys.parse(&keys.table()), Key::Table);
        assert_eq!(keys.parse(&keys.node("e1")), Key::Node("e1".into()));
        assert_eq!(keys.parse(&keys.replica("r1")), Key::Replica("r1".into()));
        assert_eq!(keys.parse(&keys.acks("r1")), Key::Acks("r1".into()));
        assert_eq!(keys.parse(b"/verge/purge/log/42"), Key::Other);
        assert_eq!(keys.parse(b"/vergex/table"), Key::Other);
        assert_eq!(keys.parse(b"\xff"), Key::Other);
        // Purge keys sort in sequence order.
        assert!(keys.purge(9) < keys.purge(10));
    }
}
