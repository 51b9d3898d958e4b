//! Task id and URL canonicalisation vectors from the wire reference (§17.1, §17.2), plus
//! properties of the canonical form.

use proptest::prelude::*;

use super::*;

fn filters(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn default_filters() -> Vec<String> {
    filters(DEFAULT_FILTERED_QUERY_PARAMS)
}

fn url_inputs(url: &str, filtered: &[&str]) -> TaskIdInputs {
    TaskIdInputs {
        url: url.to_string(),
        filtered_query_params: filters(filtered),
        ..Default::default()
    }
}

fn derived(inputs: &TaskIdInputs) -> String {
    derive(inputs).unwrap().to_string()
}

const SHA256_BLOB: &str = "b2c366cce7e68013d5441c6326d5a3e1b12aeb5ed58564d0fd3fa089bc29cb6e";

#[test]
fn plain_url_with_empty_or_default_filter() {
    let expected = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";
    assert_eq!(
        derived(&url_inputs("https://example.com/file.txt", &[])),
        expected
    );
    let with_defaults = TaskIdInputs {
        filtered_query_params: default_filters(),
        ..url_inputs("https://example.com/file.txt", &[])
    };
    assert_eq!(derived(&with_defaults), expected);
    assert_eq!(
        TaskId::sha256_of(b"https://example.com/file.txtSTANDARD").as_str(),
        expected
    );
}

#[test]
fn filtered_and_sorted_url_with_tag_and_application() {
    let inputs = TaskIdInputs {
        tag: Some("foo".into()),
        application: Some("bar".into()),
        ..url_inputs("https://example.com/file.txt?z=9&b=2&a=1", &["z"])
    };
    assert_eq!(
        derived(&inputs),
        "8b3f6e9b9b8fe20903bced565cfd1d0aaef354a4c17573f0c2c1979210443f9d"
    );
}

#[test]
fn piece_length_only() {
    let inputs = TaskIdInputs {
        piece_length: Some(1024),
        ..url_inputs("https://example.com", &[])
    };
    assert_eq!(
        derived(&inputs),
        "9f7c9aafbc6f30f8f41a96ca77eeae80c5b60964b3034b0ee43ccf7b2f9e52b8"
    );
}

#[test]
fn tag_application_revision_and_piece_length() {
    let inputs = TaskIdInputs {
        tag: Some("foo".into()),
        application: Some("bar".into()),
        hub_revision: Some("v1.0".into()),
        piece_length: Some(1024),
        ..url_inputs("https://example.com", &[])
    };
    assert_eq!(
        derived(&inputs),
        "5844f27a257287e9b734256bb25603d8005422ced8c0377f15063ec11963b25f"
    );
}

#[test]
fn empty_filter_hashes_url_verbatim() {
    assert_eq!(
        derived(&url_inputs("https://example.com/file.txt?b=2&a=1", &[])),
        "980ee327518ccc5a7c30703e1a2232e8ba9047b39431f940636c85b6146f8b9a"
    );
}

#[test]
fn go_escaped_query_with_piece_length() {
    let inputs = TaskIdInputs {
        piece_length: Some(1024),
        ..url_inputs("https://example.com/file.txt?k=a b&m=x*y&n=c~d", &["none"])
    };
    assert_eq!(
        derived(&inputs),
        "6196a6846023f6d3c1e4d30f6c86f3d4186e4c664a33e5692b0e04e49b26a9af"
    );
}

#[test]
fn content_rule_wins_over_everything() {
    let inputs = TaskIdInputs {
        content_for_calculating_task_id: Some("This is a test file".into()),
        enable_task_id_based_blob_digest: true,
        tag: Some("ignored".into()),
        ..url_inputs(
            &format!("http://localhost:5000/v2/myrepo/blobs/sha256:{SHA256_BLOB}"),
            &[],
        )
    };
    assert_eq!(
        derived(&inputs),
        "e2d0fe1585a63ec6009c8016ff8dda8b17719a637405a4e23c0ff81339148249"
    );
}

#[test]
fn blob_digest_rule() {
    let url = format!("http://localhost:5000/v2/myrepo/blobs/sha256:{SHA256_BLOB}?ns=docker.io");
    let inputs = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(&url, &[])
    };
    assert_eq!(derived(&inputs), SHA256_BLOB);

    let sha512 = "94381a28e8c039fedfa78de025158a068226c3ccd041b22c2c8e73fc993584e9\
                  b167d9ae32bc8b372c66701c808ab134e0768c8f16b9a3e61eec1ccf8faa9db8";
    let url = format!("https://registry.example.com/v2/myorg/myrepo/blobs/sha512:{sha512}");
    let inputs = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(&url, &[])
    };
    let task_id = derive(&inputs).unwrap();
    assert_eq!(task_id.as_str(), sha512);
    assert!(!task_id.fits_vortex());
}

#[test]
fn blob_digest_rule_needs_the_flag() {
    let url = format!("http://localhost:5000/v2/myrepo/blobs/sha256:{SHA256_BLOB}");
    let flag_off = derived(&url_inputs(&url, &[]));
    assert_eq!(
        flag_off,
        TaskId::sha256_of(format!("{url}STANDARD").as_bytes()).to_string()
    );
}

#[test]
fn unparsable_blob_digest_falls_back_to_url_rule() {
    for url in [
        "http://localhost:5000/v2/myrepo/blobs/sha256:abc",
        "http://localhost:5000/v2/myrepo/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
        "http://localhost:5000/v2/myrepo/blobs/invalid-digest",
        "http://localhost:5000/v2/myrepo/blobs/crc32:",
    ] {
        let flag_on = TaskIdInputs {
            enable_task_id_based_blob_digest: true,
            ..url_inputs(url, &[])
        };
        assert_eq!(derived(&flag_on), derived(&url_inputs(url, &[])), "{url}");
    }
}

#[test]
fn blob_digest_with_unsafe_characters_falls_back_to_url_rule() {
    let url = format!(
        "http://localhost:5000/v2/myrepo/blobs/sha256:{}",
        "../".repeat(21) + "x"
    );
    let flag_on = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(&url, &[])
    };
    assert_eq!(derived(&flag_on), derived(&url_inputs(&url, &[])));
}

#[test]
fn manifest_by_digest_uses_the_digest() {
    let url =
        format!("https://registry.example.com/v2/library/alpine/manifests/sha256:{SHA256_BLOB}");
    let inputs = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(&url, &[])
    };
    assert_eq!(derived(&inputs), SHA256_BLOB);
}

#[test]
fn manifest_by_tag_falls_through_to_url_rule() {
    let url = "https://registry.example.com/v2/library/alpine/manifests/latest";
    let flag_on = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(url, &[])
    };
    assert_eq!(derived(&flag_on), derived(&url_inputs(url, &[])));
}

#[test]
fn crc32_blob_digest_is_accepted() {
    let url = "http://localhost:5000/v2/myrepo/blobs/crc32:222957957";
    let inputs = TaskIdInputs {
        enable_task_id_based_blob_digest: true,
        ..url_inputs(url, &[])
    };
    assert_eq!(derived(&inputs), "222957957");
}

#[test]
fn empty_values_contribute_like_absent_ones() {
    let empty = TaskIdInputs {
        tag: Some(String::new()),
        application: Some(String::new()),
        hub_revision: Some(String::new()),
        ..url_inputs("https://example.com", &[])
    };
    assert_eq!(
        derived(&empty),
        derived(&url_inputs("https://example.com", &[]))
    );
}

#[test]
fn unparsable_url_with_filters_is_an_error() {
    let err = derive(&url_inputs(":error_url", &["x"])).unwrap_err();
    assert!(matches!(err, TaskIdError::InvalidUrl { .. }));
    // Without filters the URL is never parsed.
    assert!(derive(&url_inputs(":error_url", &[])).is_ok());
}

#[test]
fn canonical_url_vectors() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "https://example.com/file.txt?z=9&b=2&a=1",
            &["z"],
            "https://example.com/file.txt?a=1&b=2",
        ),
        (
            "https://example.com/file.txt?b=2&a=1&b=1",
            &["c"],
            "https://example.com/file.txt?a=1&b=2&b=1",
        ),
        (
            "https://example.com?foo=foo",
            &["foo"],
            "https://example.com",
        ),
        (
            "https://example.com?foo=foo#size",
            &["foo"],
            "https://example.com#size",
        ),
        (
            "https://example.com/?foo=foo",
            &["foo"],
            "https://example.com/",
        ),
        (
            "https://example.com/file.txt?k=a b&m=x*y&n=c~d",
            &["none"],
            "https://example.com/file.txt?k=a+b&m=x%2Ay&n=c~d",
        ),
        (
            "https://example.com/file.txt?a=1;x&b=2",
            &["none"],
            "https://example.com/file.txt?b=2",
        ),
        (
            "http://www.xx.yy/path?u=f&x=y&m=z&x=s#size",
            &["x", "m"],
            "http://www.xx.yy/path?u=f#size",
        ),
        (
            "http://www.xx.yy/path?u=f&x=y&m=z&x=s#size",
            &[],
            "http://www.xx.yy/path?u=f&x=y&m=z&x=s#size",
        ),
    ];
    for (url, filtered, expected) in cases {
        assert_eq!(
            canonical_url(url, &filters(filtered)).unwrap(),
            *expected,
            "{url} {filtered:?}"
        );
    }
}

#[test]
fn canonical_url_edge_cases() {
    let none = filters(&["none"]);
    // A key without `=` gets one; empty segments vanish; an empty query loses its `?`.
    assert_eq!(
        canonical_url("https://h/p?b&&a=1", &none).unwrap(),
        "https://h/p?a=1&b="
    );
    assert_eq!(canonical_url("https://h/p?", &none).unwrap(), "https://h/p");
    // Parser normalisation: scheme and host case, default port, dot segments.
    assert_eq!(
        canonical_url("HTTPS://Example.COM:443/a/../b?x=1", &none).unwrap(),
        "https://example.com/b?x=1"
    );
    // No path in the input: no `/` in the output, with or without a remaining query.
    assert_eq!(
        canonical_url("https://example.com?b=2&a=1", &none).unwrap(),
        "https://example.com?a=1&b=2"
    );
    assert_eq!(
        canonical_url("https://example.com", &none).unwrap(),
        "https://example.com"
    );
    assert_eq!(
        canonical_url("https://example.com/", &none).unwrap(),
        "https://example.com/"
    );
    // Non-special schemes keep an empty path as it is.
    assert_eq!(
        canonical_url("s3://bucket?b=2&a=1", &none).unwrap(),
        "s3://bucket?a=1&b=2"
    );
    // Filtering is case-sensitive and by decoded key.
    assert_eq!(
        canonical_url("https://h/p?ns=a&NS=b&n%73=c", &filters(&["ns"])).unwrap(),
        "https://h/p?NS=b"
    );
}

#[test]
fn go_query_escape_vectors() {
    for (raw, escaped) in [
        ("a b", "a+b"),
        ("x*y", "x%2Ay"),
        ("c~d", "c~d"),
        ("1+1", "1%2B1"),
        ("中", "%E4%B8%AD"),
    ] {
        assert_eq!(go_query_escape(raw), escaped);
    }
}

fn arb_url() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec!["http", "https", "HTTP", "ftp", "s3"]);
    let host = prop::sample::select(vec![
        "example.com",
        "Example.COM:443",
        "127.0.0.1:8080",
        "h",
    ]);
    let path = prop::string::string_regex("(/[a-zA-Z0-9._~%* -]{0,6}){0,3}").expect("valid regex");
    let segment = prop::string::string_regex("[a-cA-C;=+%*~ 中.-]{0,5}").expect("valid regex");
    let query = prop::option::of(prop::collection::vec(segment, 0..6));
    let fragment =
        prop::option::of(prop::string::string_regex("[a-z #?]{0,4}").expect("valid regex"));
    (scheme, host, path, query, fragment).prop_map(|(scheme, host, path, query, fragment)| {
        let mut url = format!("{scheme}://{host}{path}");
        if let Some(segments) = query {
            url.push('?');
            url.push_str(&segments.join("&"));
        }
        if let Some(fragment) = fragment {
            url.push('#');
            url.push_str(&fragment);
        }
        url
    })
}

fn arb_filters() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "A", "a b", "c", "ns", "中", "none"]),
        1..4,
    )
    .prop_map(|names| names.into_iter().map(String::from).collect())
}

proptest! {
    #[test]
    fn canonicalisation_is_idempotent(url in arb_url(), filtered in arb_filters()) {
        let once = canonical_url(&url, &filtered).unwrap();
        let twice = canonical_url(&once, &filtered).unwrap();
        prop_assert_eq!(&twice, &once);
    }

    #[test]
    fn filtered_keys_never_survive(url in arb_url(), filtered in arb_filters()) {
        let canonical = canonical_url(&url, &filtered).unwrap();
        let parsed = Url::parse(&canonical).unwrap();
        for (key, _) in form_urlencoded::parse(parsed.query().unwrap_or_default().as_bytes()) {
            prop_assert!(!filtered.iter().any(|name| *name == key), "{key} in {canonical}");
        }
    }

    #[test]
    fn canonical_query_is_sorted(url in arb_url(), filtered in arb_filters()) {
        let canonical = canonical_url(&url, &filtered).unwrap();
        let parsed = Url::parse(&canonical).unwrap();
        let keys: Vec<String> = form_urlencoded::parse(parsed.query().unwrap_or_default().as_bytes())
            .map(|(key, _)| key.into_owned())
            .collect();
        prop_assert!(keys.windows(2).all(|pair| pair[0] <= pair[1]), "{canonical}");
    }
}
