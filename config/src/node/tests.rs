use crate::{ConfigErrors, EdgeConfig, ShieldConfig};

const EDGE: &str = "[upstream]\norigin = \"http://127.0.0.1:8000\"\n";
const SHIELD: &str = "[origin]\nservers = [\"http://127.0.0.1:8000\"]\n";

/// Parses `tables` as an edge's and as a shield's, which must answer alike.
fn both_roles(tables: &str) -> [Result<(), ConfigErrors>; 2] {
    [
        EdgeConfig::from_toml(&format!("{EDGE}{tables}")).map(drop),
        ShieldConfig::from_toml(&format!("{SHIELD}{tables}")).map(drop),
    ]
}

#[test]
fn admin_tokens_must_be_long_and_plain() {
    let with =
        |token: &str| EdgeConfig::from_toml(&format!("{EDGE}\n[admin]\ntoken = \"{token}\"\n"));
    assert!(with("short").unwrap_err().mentions("admin.token"));
    assert!(with("has a space in it, long enough")
        .unwrap_err()
        .mentions("admin.token"));
    let cfg = with("0123456789abcdef").unwrap();
    assert_eq!(cfg.admin.token.as_deref(), Some("0123456789abcdef"));
    assert!(
        !format!("{cfg:?}").contains("0123456789abcdef"),
        "tokens are redacted in Debug"
    );
    assert!(EdgeConfig::from_toml(EDGE).unwrap().admin.token.is_none());
}

#[test]
fn the_admin_listener_needs_its_own_address_in_every_role() {
    let same = "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
    for result in both_roles(same) {
        let errs = result.unwrap_err();
        assert!(errs.mentions("server.admin_listen"), "{errs}");
        assert!(
            errs.to_string()
                .contains("127.0.0.1:8080 is also server.listen"),
            "{errs}"
        );
    }
    let ephemeral = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
    for result in both_roles(ephemeral) {
        assert_eq!(result, Ok(()), "port 0 binds two different ports");
    }
}

#[test]
fn every_node_table_is_checked_alike_in_every_role() {
    let tables = "[server]\nmax_connections = 0\n[cache]\nmax_bytes = \"0B\"\n\
                  [admin]\nmax_body_bytes = \"lots\"\n[control]\nweight = 99\n\
                  [tls]\nlisten = [\"nowhere\"]\n";
    for result in both_roles(tables) {
        let errs = result.unwrap_err();
        for path in [
            "server.max_connections",
            "cache.max_bytes",
            "admin.max_body_bytes",
            "control.url",
            "control.weight",
            "tls.listen[0]",
            "tls.certificates",
        ] {
            assert!(errs.mentions(path), "{path} not reported in:\n{errs}");
        }
    }
}

#[test]
fn the_identity_table_is_named_after_the_role() {
    let edge = EdgeConfig::from_toml(&format!("{EDGE}[edge]\nregion = \"e u\"\n"));
    assert!(edge.unwrap_err().mentions("edge.region"));
    let shield = ShieldConfig::from_toml(&format!("{SHIELD}[shield]\nid = \"a b\"\n"));
    assert!(shield.unwrap_err().mentions("shield.id"));
    assert_eq!(EdgeConfig::from_toml(EDGE).unwrap().id.as_str(), "edge-1");
    assert_eq!(
        ShieldConfig::from_toml(SHIELD).unwrap().id.as_str(),
        "shield-1"
    );
}

#[test]
fn per_address_shares_bound_an_edge_s_clients_but_not_a_shield_s_edges() {
    let edge = EdgeConfig::from_toml(EDGE).unwrap();
    assert_eq!(edge.server.max_connections_per_address, 1_000);
    assert_eq!(edge.server.max_upstream_requests_per_address, 128);
    let shield = ShieldConfig::from_toml(SHIELD).unwrap();
    assert_eq!(shield.server.max_connections_per_address, 1_000_000);
    assert_eq!(shield.server.max_upstream_requests_per_address, 1_000_000);
    let set = "[server]\nmax_connections_per_address = 7\nmax_upstream_requests_per_address = 3\n";
    let shield = ShieldConfig::from_toml(&format!("{SHIELD}{set}")).unwrap();
    assert_eq!(shield.server.max_connections_per_address, 7);
    assert_eq!(shield.server.max_upstream_requests_per_address, 3);
    for result in both_roles("[server]\nmax_upstream_requests_per_address = 0\n") {
        assert!(result
            .unwrap_err()
            .mentions("server.max_upstream_requests_per_address"));
    }
}

#[test]
fn the_buffers_budget_holds_at_least_one_buffer() {
    for result in both_roles(
        "[server]\nrequest_body_buffer = \"1MiB\"\nrequest_body_buffer_total = \"512KiB\"\n",
    ) {
        assert!(result
            .unwrap_err()
            .mentions("server.request_body_buffer_total"));
    }
    let config = EdgeConfig::from_toml(EDGE).unwrap();
    assert_eq!(config.server.request_body_buffer_total.bytes(), 64 << 20);
}
