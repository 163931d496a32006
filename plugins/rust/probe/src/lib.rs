//! probe: a command-driven Proxy-Wasm test plugin that logs every callback and runs configured hostcalls.

mod commands;
mod config;
mod raw;

use config::{Config, Kind, Return};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};
use std::rc::Rc;

/// Buffer types of the VM and plugin configuration.
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;

proxy_wasm::main! {{
    // Info keeps the SDK's own trace! lines out of the log; panics are logged as critical.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(Probe::root(context_id)));
}}

/// Which of the SDK's context kinds a `Probe` plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Http,
    Stream,
}

/// One context of any kind: the root holds the parsed plugin configuration and hands a
/// shared copy to each HTTP or stream context it creates.
struct Probe {
    id: u32,
    role: Role,
    config: Rc<Config>,
}

impl Probe {
    fn root(id: u32) -> Probe {
        Probe {
            id,
            role: Role::Root,
            config: Rc::default(),
        }
    }

    fn child(&self, id: u32, role: Role) -> Probe {
        Probe {
            id,
            role,
            config: Rc::clone(&self.config),
        }
    }

    /// Logs the entry line `<phase> ctx=<id> <args>`.
    fn entry(&self, phase: &str, args: &str) {
        let space = if args.is_empty() { "" } else { " " };
        raw::info(&format!("{phase} ctx={}{space}{args}", self.id));
    }

    /// Logs the entry line, runs the phase's commands, and returns its configured action.
    fn phase(&self, phase: &str, args: &str) -> Action {
        self.phase_ending(phase, args, false)
    }

    /// `phase` for a callback that knows whether the stream ends with it.
    fn phase_ending(&self, phase: &str, args: &str, end_of_stream: bool) -> Action {
        self.entry(phase, args);
        for command in self.config.commands(phase) {
            commands::run(phase, command);
        }
        match self.config.returns(phase) {
            Return::Continue => Action::Continue,
            Return::PauseUntilEnd if end_of_stream => Action::Continue,
            Return::Pause | Return::PauseUntilEnd => Action::Pause,
        }
    }

    /// Callbacks that root and per-stream contexts share are `root_`-prefixed on the root.
    fn shared_phase(&self, name: &str) -> Action {
        self.shared_phase_with(name, "")
    }

    fn shared_phase_with(&self, name: &str, args: &str) -> Action {
        if self.role == Role::Root {
            self.phase(&format!("root_{name}"), args)
        } else {
            self.phase(name, args)
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.entry("delete", "");
    }
}

// === impl Context (every kind) ===

impl Context for Probe {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        let args = format!("token={token} headers={headers} body={body} trailers={trailers}");
        self.shared_phase_with("http_call_response", &args);
    }

    /// The SDK reports both `proxy_on_grpc_receive` (status 0) and `proxy_on_grpc_close`
    /// (size 0) of a unary call here; status 0 is taken as a message.
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if status == 0 {
            self.shared_phase_with("grpc_message", &format!("token={token} size={size}"));
        } else {
            self.shared_phase_with("grpc_close", &format!("token={token} status={status}"));
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, n: u32) {
        self.shared_phase_with("grpc_initial_metadata", &format!("token={token} n={n}"));
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        self.shared_phase_with("grpc_message", &format!("token={token} size={size}"));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, n: u32) {
        self.shared_phase_with("grpc_trailing_metadata", &format!("token={token} n={n}"));
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        self.shared_phase_with("grpc_close", &format!("token={token} status={status}"));
    }

    fn on_foreign_function(&mut self, function: u32, size: usize) {
        self.phase(
            "foreign_function",
            &format!("function={function} size={size}"),
        );
    }

    /// `returns.done = "pause"` makes on_done return false (not done yet).
    fn on_done(&mut self) -> bool {
        self.shared_phase("done") == Action::Continue
    }
}

// === impl RootContext ===

impl RootContext for Probe {
    fn on_vm_start(&mut self, size: usize) -> bool {
        self.entry("vm_start", &format!("size={size}"));
        let bytes = raw::read_buffer(VM_CONFIGURATION, size).unwrap_or_default();
        let vm = match Config::parse(&bytes) {
            Ok(vm) => vm,
            Err(_) => {
                // Not JSON (a Struct or TypedStruct arrives in protobuf wire format): show
                // the bytes, and start as if the VM configuration were empty.
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                raw::info(&format!("vm_start: not json: {hex}"));
                Config::default()
            }
        };
        // The plugin configuration is usually not readable yet; use it only as a fallback.
        let plugin = if vm.vm_start.is_none() || vm.vm_start_result.is_none() {
            raw::read_buffer(PLUGIN_CONFIGURATION, usize::MAX)
                .and_then(|bytes| Config::parse(&bytes).ok())
                .unwrap_or_default()
        } else {
            Config::default()
        };
        for command in vm
            .vm_start
            .as_ref()
            .or(plugin.vm_start.as_ref())
            .into_iter()
            .flatten()
        {
            commands::run("vm_start", command);
        }
        vm.vm_start_result
            .or(plugin.vm_start_result)
            .unwrap_or(true)
    }

    fn on_configure(&mut self, size: usize) -> bool {
        self.entry("configure", &format!("size={size}"));
        let bytes = raw::read_buffer(PLUGIN_CONFIGURATION, size).unwrap_or_default();
        match Config::parse(&bytes) {
            Ok(config) => self.config = Rc::new(config),
            Err(error) => {
                raw::info(&format!("configure: bad json: {error}"));
                return false;
            }
        }
        for command in &self.config.configure {
            commands::run("configure", command);
        }
        self.config.configure_result.unwrap_or(true)
    }

    fn on_tick(&mut self) {
        self.phase("tick", "");
    }

    fn on_queue_ready(&mut self, queue: u32) {
        self.phase("queue_ready", &format!("queue={queue}"));
    }

    fn on_log(&mut self) {
        self.shared_phase("log");
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        raw::info(&format!(
            "create_http_context ctx={context_id} root={}",
            self.id
        ));
        Some(Box::new(self.child(context_id, Role::Http)))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        raw::info(&format!(
            "create_stream_context ctx={context_id} root={}",
            self.id
        ));
        Some(Box::new(self.child(context_id, Role::Stream)))
    }

    /// The SDK asks this for every new context; `"kind"` in the plugin configuration decides.
    fn get_type(&self) -> Option<ContextType> {
        Some(match self.config.kind {
            Kind::Http => ContextType::HttpContext,
            Kind::Stream => ContextType::StreamContext,
        })
    }
}

// === impl HttpContext ===

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, n: usize, eos: bool) -> Action {
        self.phase("request_headers", &format!("n={n} eos={eos}"))
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        self.phase_ending("request_body", &format!("size={size} eos={eos}"), eos)
    }

    fn on_http_request_trailers(&mut self, n: usize) -> Action {
        self.phase("request_trailers", &format!("n={n}"))
    }

    fn on_http_response_headers(&mut self, n: usize, eos: bool) -> Action {
        self.phase("response_headers", &format!("n={n} eos={eos}"))
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        self.phase_ending("response_body", &format!("size={size} eos={eos}"), eos)
    }

    fn on_http_response_trailers(&mut self, n: usize) -> Action {
        self.phase("response_trailers", &format!("n={n}"))
    }

    fn on_log(&mut self) {
        self.phase("log", "");
    }
}

// === impl StreamContext ===

impl StreamContext for Probe {
    fn on_new_connection(&mut self) -> Action {
        self.phase("new_connection", "")
    }

    fn on_downstream_data(&mut self, size: usize, eos: bool) -> Action {
        self.phase("downstream_data", &format!("size={size} eos={eos}"))
    }

    fn on_downstream_close(&mut self, peer: PeerType) {
        self.phase("downstream_close", &format!("peer={}", peer as u32));
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> Action {
        self.phase("upstream_data", &format!("size={size} eos={eos}"))
    }

    fn on_upstream_close(&mut self, peer: PeerType) {
        self.phase("upstream_close", &format!("peer={}", peer as u32));
    }

    fn on_log(&mut self) {
        self.phase("log", "");
    }
}
