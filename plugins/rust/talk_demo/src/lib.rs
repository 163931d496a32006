//! The filter of the Envoy Wasm talk's demo: its configuration is `key=value` lines,
//! added as response headers; requests carrying a `hello` header are counted in
//! `hello_header_counter` (shown on the admin port's `/stats/prometheus`).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(DemoRoot::default()) });
}}

/// What the root context read from its configuration.
#[derive(Default)]
struct Settings {
    headers: Vec<(String, String)>,
    counter: u32,
}

#[derive(Default)]
struct DemoRoot {
    settings: Rc<Settings>,
}

impl Context for DemoRoot {}

impl RootContext for DemoRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self.get_plugin_configuration().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let mut headers = Vec::new();
        for (i, line) in text.lines().map(str::trim).enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => headers.push((k.trim().to_string(), v.trim().to_string())),
                _ => {
                    log::error!("talk_demo: configuration line {}: {line:?} is not key=value", i + 1);
                    return false;
                }
            }
        }
        let counter = match hostcalls::define_metric(MetricType::Counter, "hello_header_counter") {
            Ok(id) => id,
            Err(e) => {
                log::error!("talk_demo: cannot define hello_header_counter: {e:?}");
                return false;
            }
        };
        log::info!("talk_demo: {} response header(s) configured", headers.len());
        self.settings = Rc::new(Settings { headers, counter });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(DemoFilter { settings: self.settings.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct DemoFilter {
    settings: Rc<Settings>,
}

impl Context for DemoFilter {}

impl HttpContext for DemoFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(hello) = self.get_http_request_header("hello") {
            log::info!("talk_demo: hello {hello}");
            let _ = hostcalls::increment_metric(self.settings.counter, 1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (k, v) in &self.settings.headers {
            self.add_http_response_header(k, v);
        }
        Action::Continue
    }
}
