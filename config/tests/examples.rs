//! The annotated examples under `config/examples/` parse and validate.

use verge_config::{detect_role, ConfigFile, EdgeConfig, Role, ShieldConfig};

/// An example's `text`, checked to be `role`'s file, parsed and validated.
fn example<C: ConfigFile>(text: &str, role: Role) -> C {
    assert_eq!(detect_role(text), Ok(role));
    C::from_toml(text).expect("example must be valid")
}

#[test]
fn edge_example_parses_and_is_an_edge_config() {
    let cfg: EdgeConfig = example(include_str!("../examples/edge.toml"), Role::Edge);
    assert_eq!(cfg.id.as_str(), "edge-1");
    assert_eq!(cfg.upstream.origin.to_string(), "http://127.0.0.1:8000");
}

#[test]
fn a_file_without_a_role_table_is_refused() {
    let err = detect_role("[cache]\nmax_bytes = \"1MiB\"\n").unwrap_err();
    assert!(err.to_string().contains("[edge]"));
}

#[test]
fn shield_example_parses_and_is_a_shield_config() {
    let cfg: ShieldConfig = example(include_str!("../examples/shield.toml"), Role::Shield);
    assert_eq!(cfg.id.as_str(), "shield-1");
    assert_eq!(cfg.origin.servers.len(), 1);
    assert_eq!(cfg.origin.retries, 1);
}

#[test]
fn control_example_parses_and_shows_the_defaults() {
    let cfg: verge_config::ControlConfig =
        example(include_str!("../examples/control.toml"), Role::Control);
    let defaults = verge_config::ControlConfig::from_toml(
        "[controller]\ndata_dir = \"/d\"\ntoken = \"0123456789abcdef\"\n",
    )
    .expect("minimal file is valid");
    assert_eq!(cfg.health, defaults.health);
    assert_eq!(cfg.purge, defaults.purge);
    assert_eq!(cfg.streams, defaults.streams);
    assert_eq!(cfg.regions.len(), 3);
}

#[test]
fn a_file_with_two_role_tables_is_refused() {
    let err = detect_role("[edge]\n[controller]\n").unwrap_err();
    assert!(err.to_string().contains("one role"), "{err}");
}
