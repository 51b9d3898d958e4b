//! Tests of config parsing and validation, and of the example file in `config/`.

use super::*;

#[test]
fn unknown_keys_are_rejected() {
    let err = DaemonToml::parse("schedulers: [a]\nbogus: 1\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn defaults_apply() {
    let toml = DaemonToml::parse("schedulers: ['127.0.0.1:8002']\n").unwrap();
    let config = DaemonConfig::try_from(toml).unwrap();
    assert_eq!(config.schedulers, vec!["http://127.0.0.1:8002".to_string()]);
    assert_eq!(config.upload_addr.port(), 4000);
    assert_eq!(config.vortex_addr.port(), 4005);
    assert_eq!(config.download.concurrent_pieces, 8);
}

#[test]
fn zero_intervals_are_refused() {
    for section in [
        "storage:\n  gcInterval: 0s",
        "upload:\n  announceInterval: 0s",
        "download:\n  pieceTimeout: 0s",
    ] {
        let text = format!("schedulers: [http://s:8002]\n{section}\n");
        let err = DaemonConfig::try_from(DaemonToml::parse(&text).unwrap()).unwrap_err();
        assert!(matches!(err, ConfigError::Zero { .. }), "{section}: {err}");
    }
}

#[test]
fn missing_scheduler_is_an_error() {
    let err = DaemonConfig::try_from(DaemonToml::default()).unwrap_err();
    assert!(matches!(err, ConfigError::NoScheduler));
}

#[test]
fn sections_parse() {
    let text =
        "schedulers: [http://s:8002]\ndownload:\n  pieceTimeout: 5s\nstorage:\n  capacity: 10GiB\n";
    let config = DaemonConfig::try_from(DaemonToml::parse(text).unwrap()).unwrap();
    assert_eq!(config.download.piece_timeout, Duration::from_secs(5));
    assert_eq!(config.storage.capacity, Some(10 * 1024 * 1024 * 1024));
}

#[test]
fn example_config_parses_with_the_documented_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/daemon.yaml");
    let toml = DaemonToml::load(&path).unwrap();
    let config = DaemonConfig::try_from(toml).unwrap();
    let defaults = DaemonConfig::try_from(DaemonToml {
        schedulers: vec!["http://127.0.0.1:8002".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(config.upload_addr, defaults.upload_addr);
    assert_eq!(
        config.download.piece_timeout,
        defaults.download.piece_timeout
    );
    assert_eq!(config.storage.ttl, defaults.storage.ttl);
    assert_eq!(config.socket, defaults.socket);
}
