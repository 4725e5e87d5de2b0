//! `load_sources` never panics: not on arbitrary text, not on TOML-shaped noise, not on mutated
//! copies of the valid fixture files. Every diagnostic it returns points inside its file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use payguard::rules::{load_sources, Diagnostic};
use proptest::prelude::*;
use std::path::PathBuf;

const FIXTURES: [(&str, &str); 3] = [
    ("tests/fixtures/rules/00-defaults.toml", include_str!("fixtures/rules/00-defaults.toml")),
    ("tests/fixtures/rules/10-wechat.toml", include_str!("fixtures/rules/10-wechat.toml")),
    ("tests/fixtures/rules/20-shop.toml", include_str!("fixtures/rules/20-shop.toml")),
];

/// Loads and checks that each diagnostic names one of the files and a position inside it.
fn load_checked(files: &[(PathBuf, String)]) {
    if let Err(diags) = load_sources(files) {
        assert!(!diags.is_empty(), "an error result carries at least one diagnostic");
        for d in &diags {
            assert_in_file(files, d);
        }
    }
}

fn assert_in_file(files: &[(PathBuf, String)], d: &Diagnostic) {
    let (_, text) =
        files.iter().find(|(p, _)| *p == d.file).unwrap_or_else(|| panic!("diagnostic for an unknown file: {d}"));
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(d.line >= 1 && d.line <= lines.len(), "{d}");
    let line_chars = lines[d.line - 1].chars().count();
    assert!(d.col >= 1 && d.col <= line_chars + 1, "{d}");
    assert!(!d.message.is_empty(), "{d}");
}

fn fixture_files() -> Vec<(PathBuf, String)> {
    FIXTURES.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    ReplaceValue { line: usize, value: String },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let fragment = prop_oneof![
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("]]".to_owned()),
        Just("{".to_owned()),
        Just("= ".to_owned()),
        Just("\n[[route]]\n".to_owned()),
        Just("@".to_owned()),
        Just("/*".to_owned()),
        Just("é".to_owned()),
        "[ -~]{0,8}",
    ];
    let value = prop_oneof![
        Just("\"\"".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"@wechatpay\"".to_owned()),
        Just("\"10/s\"".to_owned()),
        Just("[\"::/0\", \"@nope\"]".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("nan".to_owned()),
        "\"[ -~]{0,12}\"",
    ];
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), fragment).prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), value).prop_map(|(line, value)| Mutation::ReplaceValue { line, value }),
    ]
}

fn char_boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match m {
        Mutation::Delete { at, len } => {
            let start = char_boundary(text, *at);
            let end = char_boundary(text, (start + len).min(text.len()));
            let end = end.max(start);
            return format!("{}{}", &text[..start], &text[end..]);
        }
        Mutation::Insert { at, text: t } => {
            let i = char_boundary(text, *at);
            return format!("{}{t}{}", &text[..i], &text[i..]);
        }
        Mutation::DuplicateLine { line } => {
            let i = line % lines.len();
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        Mutation::SwapLines { a, b } => {
            let n = lines.len();
            lines.swap(a % n, b % n);
        }
        Mutation::ReplaceValue { line, value } => {
            let i = line % lines.len();
            if let Some((k, _)) = lines[i].split_once('=') {
                lines[i] = format!("{k}= {value}");
            }
        }
    }
    lines.join("\n")
}

#[test]
fn fixtures_load_unmutated() {
    assert!(load_sources(&fixture_files()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load_checked(&[(PathBuf::from("r.toml"), text)]);
    }

    #[test]
    fn toml_shaped_noise_never_panics(text in "(\\[\\[route\\]\\]\n|\\[route\\.(validate|signature)\\]\n|\\[(defaults|ip_sets)\\]\n|(name|match|path|methods|host|mode|ip_allow|ip_deny|rate_limit|key|rate|burst|at|type|min|max|fields|provider|max_body|action) = |\"[a-z0-9/@*:.-]{0,10}\"|\\{ |\\}|\\[|\\]|, |[0-9]{1,3}|\n){0,60}") {
        load_checked(&[(PathBuf::from("r.toml"), text)]);
    }

    #[test]
    fn mutated_fixtures_never_panic(file in 0usize..3, mutations in proptest::collection::vec(arb_mutation(), 1..4)) {
        let mut files = fixture_files();
        let mut text = files[file].1.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        files[file].1 = text;
        load_checked(&files);
    }
}
