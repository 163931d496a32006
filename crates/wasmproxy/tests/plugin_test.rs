//! `wasmproxy plugin-test`: the repository's specs pass on wasmproxy and on Envoy with no
//! disagreement; failures, disagreements and mistakes in a spec are reported as a user
//! needs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{repo, wasmproxy};

/// The specs of the repository's test plugins and of the talk example.
const SPECS: &[&str] = &[
    "examples/talk_demo/talk_demo.test.yaml",
    "plugins/rust/probe/probe.test.yaml",
    "plugins/rust/header_filter/header_filter.test.yaml",
    "plugins/rust/debug_trap/debug_trap.test.yaml",
    "plugins/go/header_filter/header_filter.test.yaml",
    "plugins/assemblyscript/as_header_filter.test.yaml",
];

fn envoy() -> PathBuf {
    wasmproxy_conformance::proxy::find_envoy()
}

/// A scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-plugin-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn plugin_test(args: &[&str]) -> Output {
    wasmproxy().current_dir(repo()).arg("plugin-test").args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_repository_specs_pass_and_envoy_agrees() {
    let dir = scratch("specs");
    let junit = dir.join("junit.xml");
    let envoy = envoy();
    let mut args: Vec<&str> = SPECS.to_vec();
    args.extend(["--envoy", envoy.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    let out = plugin_test(&args);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for spec in SPECS {
        for suite in [" on wasmproxy\n", " on envoy\n", ": wasmproxy and envoy agree\n"] {
            assert!(
                text.lines().any(|l| l.starts_with(spec) && format!("{l}\n").ends_with(suite)),
                "{spec}{suite} in {text}"
            );
        }
    }
    // Ticks, queue messages and shared data are for wasmproxy alone.
    assert!(text.contains("  skip  a tick sets shared data (ticks: Envoy ticks on its own timers only)\n"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(xml.matches("<testsuite ").count(), SPECS.len() * 3, "{xml}");
    assert_eq!(xml.matches(" failures=\"0\"").count(), SPECS.len() * 3, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn failures_are_shown_as_differences_with_an_exit_code_and_junit() {
    let dir = scratch("failures");
    let spec = dir.join("bad.test.yaml");
    let plugin = repo().join("examples/talk_demo/talk_demo.wasm");
    std::fs::write(
        &spec,
        format!(
            r#"plugin: {}
name: talk_demo
configuration: "x-wasm-demo=hello from a plugin"
cases:
- name: what the plugin does not do
  request: {{ headers: {{ hello: world }} }}
  upstream: {{ body: "line one\nline two\nline three\n" }}
  expect:
    status: 201
    headers: {{ x-wasm-demo: other, x-powered-by: proxy-wasm }}
    body: "line one\nline 2\nline three\n"
    upstream: {{ headers: {{ hello: mars }} }}
    logs: ["talk_demo: hello mars"]
    metrics: {{ hello_header_counter: 5 }}
- name: what it does
  request: {{ headers: {{ hello: again }} }}
  expect: {{ status: 200, headers: {{ x-wasm-demo: hello from a plugin }}, metrics: {{ hello_header_counter: 2 }} }}
"#,
            plugin.display()
        ),
    )
    .unwrap();
    let junit = dir.join("junit.xml");
    let out = plugin_test(&[spec.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "  FAIL  what the plugin does not do (",
        "        status: expected 201, got 200\n",
        "        response header x-powered-by: expected \"proxy-wasm\", got absent\n",
        "        response header x-wasm-demo: expected \"other\", got \"hello from a plugin\"\n",
        "        body differs (- expected, + got):\n            line one\n          - line 2\n          + line two\n            line three\n",
        "        upstream header hello: expected \"mars\", got \"world\"\n",
        "        logs: no line containing \"talk_demo: hello mars\"; the plugin logged:\n            [info] talk_demo: hello world\n",
        "        metric hello_header_counter: expected 5, got 1\n",
        "  ok    what it does (",
        "2 case(s): 1 passed, 1 failed\n",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(xml.contains(" tests=\"2\" failures=\"1\" skipped=\"0\""), "{xml}");
    assert!(xml.contains("<failure message=\"status: expected 201, got 200\">"), "{xml}");
}

#[test]
fn a_disagreement_with_envoy_is_reported() {
    // The listener's port, which each proxy picks for itself, read by the plugin.
    let dir = scratch("disagreement");
    let spec = dir.join("port.test.yaml");
    std::fs::write(
        &spec,
        format!(
            "plugin: {}\nconfiguration: {{ phases: {{ request_headers: [[get_property, destination.port]] }} }}\n\
             cases:\n- name: the port\n  request: {{}}\n  expect: {{ status: 200 }}\n",
            repo().join("plugins/out/probe.wasm").display()
        ),
    )
    .unwrap();
    let envoy = envoy();
    let out = plugin_test(&[spec.to_str().unwrap(), "--envoy", envoy.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let agree = text.split(": wasmproxy and envoy agree\n").nth(1).expect("the comparison");
    assert!(agree.starts_with("  FAIL  the port ("), "{text}");
    assert!(agree.contains("the plugin's log lines:\n            wasmproxy: "), "{text}");
    assert!(agree.contains("request_headers get_property destination.port => status=0 value="), "{text}");
    // Each proxy on its own passed.
    assert_eq!(text.matches("1 case(s): 1 passed, 0 failed\n").count(), 2, "{text}");
}

#[test]
fn a_mistake_in_a_spec_is_named_with_its_field() {
    let dir = scratch("mistakes");
    let plugin = repo().join("plugins/out/probe.wasm");
    for (spec, expected) in [
        (
            "cases:\n- name: a\n  expect: { stauts: 200 }\n",
            "cases[0].expect.stauts: unknown field `stauts`, expected one of",
        ),
        (
            "cases:\n- name: a\n  calls: { auth: [{ status: 200 }] }\n",
            "cases[0] (\"a\").calls.auth: no callout of that name",
        ),
        ("cases:\n- name: a\n  request: { trailers: { x: y } }\n", "request trailers need http2: true"),
        ("cases: []\n", "cases: a spec has at least one case"),
        ("cases:\n- name: a\n  expect: { status: two }\n", "cases[0].expect.status: invalid type: string \"two\""),
    ] {
        let file = dir.join("spec.yaml");
        std::fs::write(&file, format!("plugin: {}\n{spec}", plugin.display())).unwrap();
        let out = plugin_test(&[file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{}: ", file.display())) && err.contains(expected), "{expected:?} in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
