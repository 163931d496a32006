//! `wasmproxy plugin-test SPEC...`: runs a plugin through the cases of a spec on the real
//! proxy, in this process (one worker, the spec's upstream and callout services scripted
//! case by case), checks what each case expects, and, with `--envoy PATH`, runs the same
//! cases on Envoy and reports where the two disagree. `docs/PLUGIN_AUTHORS.md` is the guide.

mod check;
mod harness;
mod report;
mod spec;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use check::Observed;
use harness::Service;
use report::{CaseResult, Suite};
use spec::{Case, Protocol, Spec, UPSTREAM_CLUSTER};
use target::{LogLine, Target};

/// The options of `plugin-test`.
pub struct TestOptions {
    specs: Vec<PathBuf>,
    envoy: Option<PathBuf>,
    junit: Option<PathBuf>,
}

impl TestOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<TestOptions, String> {
        let mut o = TestOptions { specs: Vec::new(), envoy: None, junit: None };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--envoy" => o.envoy = Some(value(&arg)?.into()),
                "--junit" => o.junit = Some(value(&arg)?.into()),
                flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
                spec => o.specs.push(spec.into()),
            }
        }
        if o.specs.is_empty() {
            return Err("plugin-test needs a spec file".into());
        }
        Ok(o)
    }
}

/// Runs every spec; true if every case passed (and, with `--envoy`, the proxies agreed).
pub fn run(o: TestOptions) -> anyhow::Result<bool> {
    let specs: Vec<Spec> =
        o.specs.iter().map(|f| Spec::read(f)).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
    let levels: Vec<&str> = specs.iter().map(|s| s.log_level.as_deref().unwrap_or("info")).collect();
    if levels.windows(2).any(|w| w[0] != w[1]) {
        anyhow::bail!("the specs of one run have one log_level (here: {})", levels.join(", "));
    }
    let logs = target::capture_logs(levels[0]).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut suites = Vec::new();
    for (spec, file) in specs.iter().zip(&o.specs) {
        suites.extend(run_spec(spec, file, o.envoy.as_deref(), &logs, &runtime)?);
    }
    if let Some(path) = &o.junit {
        std::fs::write(path, report::junit(&suites))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(suites.iter().all(|s| s.failed() == 0))
}

/// One spec on wasmproxy and, given Envoy, on Envoy too: its suites (with Envoy, a third
/// one for where they disagree), each printed.
fn run_spec(
    spec: &Spec,
    file: &Path,
    envoy: Option<&Path>,
    logs: &Arc<Mutex<Vec<LogLine>>>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<Suite>> {
    let services = runtime.block_on(Services::start(spec))?;
    let config = bootstrap(spec, &services)?;
    let title = format!("{} ({})", file.display(), spec.plugin.display());
    let mut target = Target::wasmproxy(&config, logs.clone())
        .map_err(|e| anyhow::anyhow!("{title}: wasmproxy did not start: {e}"))?;
    let ours = run_cases(spec, &mut target, &services, runtime);
    let mut suites = vec![suite(format!("{title} on wasmproxy"), &ours, spec, |c, o| check::check(&c.expect, o))];
    if let Some(binary) = envoy {
        let work = std::env::temp_dir().join(format!("wasmproxy-plugin-test-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let level = spec.log_level.as_deref().unwrap_or("info");
        let mut target = Target::envoy(binary, &config, &work, level).map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
        let theirs = run_cases(spec, &mut target, &services, runtime);
        let _ = std::fs::remove_dir_all(&work);
        suites.push(suite(format!("{title} on envoy"), &theirs, spec, |c, o| check::check(&c.expect, o)));
        let pairs: Vec<(Observed, Observed)> = ours.into_iter().zip(theirs).collect();
        suites.push(suite(format!("{title}: wasmproxy and envoy agree"), &pairs, spec, |_, (a, b)| {
            check::disagreements(("wasmproxy", a), ("envoy", b))
        }));
    }
    for s in &suites {
        s.print();
    }
    Ok(suites)
}

/// A suite from each case's observation(s): `judge` gives its failures. A case Envoy
/// cannot run (it ticks, or delivers queue messages, or expects shared data) is skipped
/// on Envoy and in the comparison.
fn suite<T: Timed>(name: String, observed: &[T], spec: &Spec, judge: impl Fn(&Case, &T) -> Vec<String>) -> Suite {
    let on_wasmproxy_only = !name.ends_with("on wasmproxy");
    let cases = spec
        .cases
        .iter()
        .zip(observed)
        .map(|(case, o)| {
            let skipped = on_wasmproxy_only.then(|| wasmproxy_only(case)).flatten();
            let failures = if skipped.is_some() { Vec::new() } else { judge(case, o) };
            CaseResult { name: case.name.clone(), failures, skipped, millis: o.millis() }
        })
        .collect();
    Suite { name, cases }
}

/// Why Envoy cannot run the case, if it cannot.
fn wasmproxy_only(case: &Case) -> Option<String> {
    if case.ticks > 0 {
        Some("ticks: Envoy ticks on its own timers only".into())
    } else if !case.queue.is_empty() {
        Some("queue: Envoy takes queue messages from its plugins only".into())
    } else if !case.expect.shared_data.is_empty() {
        Some("shared_data: Envoy does not show its shared data".into())
    } else {
        None
    }
}

/// Something a case took time on.
trait Timed {
    fn millis(&self) -> u128;
}

impl Timed for Observed {
    fn millis(&self) -> u128 {
        self.millis
    }
}

impl Timed for (Observed, Observed) {
    fn millis(&self) -> u128 {
        0
    }
}

/// The upstream and the callout services.
struct Services {
    upstream: Service,
    callouts: BTreeMap<String, (Protocol, Service)>,
}

impl Services {
    async fn start(spec: &Spec) -> std::io::Result<Services> {
        let upstream = Service::start(Protocol::Http).await?;
        let mut callouts = BTreeMap::new();
        for (name, callout) in &spec.callouts {
            callouts.insert(name.clone(), (callout.protocol, Service::start(callout.protocol).await?));
        }
        Ok(Services { upstream, callouts })
    }
}

/// Runs the cases in order on `target`, then stops it.
fn run_cases(
    spec: &Spec,
    target: &mut Target,
    services: &Services,
    runtime: &tokio::runtime::Runtime,
) -> Vec<Observed> {
    let vm_id = spec.vm_id.as_str();
    let on_envoy = matches!(target, Target::Envoy(_));
    let observed = spec
        .cases
        .iter()
        .map(|case| {
            if on_envoy && wasmproxy_only(case).is_some() {
                return Observed::default();
            }
            run_case(case, vm_id, target, services, runtime)
        })
        .collect();
    target.stop();
    observed
}

fn run_case(
    case: &Case,
    vm_id: &str,
    target: &Target,
    services: &Services,
    runtime: &tokio::runtime::Runtime,
) -> Observed {
    let started = Instant::now();
    services.upstream.always(case.upstream.clone().unwrap_or_default());
    for (name, (_, service)) in &services.callouts {
        service.script(case.calls.get(name).map_or(&[][..], Vec::as_slice));
    }
    let mark = target.log_mark();
    let mut o = Observed::default();
    for i in 0..case.ticks {
        match target.tick() {
            Ok(0) => {
                o.problems.push(format!("tick {}: no root context has a tick period (the plugin set none)", i + 1))
            }
            Ok(_) => {}
            Err(e) => o.problems.push(format!("ticks: {e}")),
        }
    }
    for m in &case.queue {
        let vm = m.vm_id.as_deref().unwrap_or(vm_id);
        if let Err(e) = target.enqueue(vm, &m.queue, m.message.0.as_bytes()) {
            o.problems.push(format!("queue: {e}"));
        }
    }
    if let Some(request) = &case.request {
        o.reply = Some(runtime.block_on(harness::exchange(target.listener(), request)));
        target.settle();
    }
    wait_for_calls(case, services, target);
    o.upstream = services.upstream.received();
    o.calls = services.callouts.iter().map(|(name, (_, s))| (name.clone(), s.received())).collect();
    o.logs = target.logs_since(mark);
    o.stats = target.stats();
    for key in case.expect.shared_data.keys() {
        o.shared_data.insert(key.clone(), target.shared_data(vm_id, key));
    }
    o.millis = started.elapsed().as_millis();
    o
}

/// Calls a plugin makes outside a request (from a tick) are answered after the tick
/// returns: waits (up to a few seconds) until each service has had the calls the case
/// scripts, then until the plugin has had their answers (no callout in flight). Envoy does
/// not tell that: there, a moment.
fn wait_for_calls(case: &Case, services: &Services, target: &Target) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let scripted = |name: &str| case.calls.get(name).map_or(0, |answers| answers.iter().filter(|a| !a.timeout).count());
    let pending = || services.callouts.iter().any(|(name, (_, s))| s.received().len() < scripted(name));
    let mut waited = false;
    while pending() && Instant::now() < deadline {
        waited = true;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if target.callouts_in_flight().is_some() {
        while target.callouts_in_flight().is_some_and(|n| n > 0) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    } else if waited || case.request.is_none() && !case.calls.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The Envoy bootstrap (JSON) both proxies run: an admin, a listener whose connection
/// manager runs the plugin then the router to the upstream, and a cluster per service.
fn bootstrap(spec: &Spec, services: &Services) -> anyhow::Result<String> {
    use serde_json::json;
    let code =
        std::fs::canonicalize(&spec.plugin).map_err(|e| anyhow::anyhow!("plugin {}: {e}", spec.plugin.display()))?;
    let string_value =
        |text: &str| json!({ "@type": "type.googleapis.com/google.protobuf.StringValue", "value": text });
    let mut vm_config = json!({
        "vm_id": spec.vm_id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": { "local": { "filename": code.display().to_string() } },
    });
    if let Some(c) = &spec.vm_configuration {
        vm_config["configuration"] = string_value(&c.0);
    }
    if !spec.environment.is_empty() {
        let values: BTreeMap<&String, &String> = spec.environment.iter().map(|(k, v)| (k, &v.0)).collect();
        vm_config["environment_variables"] = json!({ "key_values": values });
    }
    let mut plugin = json!({ "name": spec.plugin_name(), "root_id": spec.root_id, "vm_config": vm_config });
    if let Some(c) = &spec.configuration {
        plugin["configuration"] = string_value(&c.0);
    }
    if let Some(policy) = &spec.failure_policy {
        plugin["failure_policy"] = json!(policy);
    }
    let address = |port: u16| json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } });
    let cluster = |name: &str, port: u16, http2: bool| {
        let mut c = json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": address(port) } }] }] },
        });
        if http2 {
            c["typed_extension_protocol_options"] = json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            }});
        }
        c
    };
    let mut clusters = vec![cluster(UPSTREAM_CLUSTER, services.upstream.addr.port(), false)];
    for (name, (protocol, service)) in &services.callouts {
        clusters.push(cluster(name, service.addr.port(), *protocol == Protocol::Grpc));
    }
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "plugin_test",
        "route_config": { "name": "plugin_test", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": UPSTREAM_CLUSTER, "timeout": "30s" } }],
        }]},
        "http_filters": [
            { "name": "plugin", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": plugin } },
            { "name": "envoy.filters.http.router", "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
        ],
    });
    let config = json!({
        "admin": { "address": address(0) },
        "static_resources": {
            "listeners": [{ "name": "plugin_test", "address": address(0), "filter_chains": [{ "filters": [
                { "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm },
            ]}]}],
            "clusters": clusters,
        },
    });
    Ok(serde_json::to_string_pretty(&config)?)
}
