//! header_filter: a small HTTP filter that reads one request header, counts requests and adds response headers.

use log::{debug, error};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use std::rc::Rc;

/// Name of the counter incremented for every request.
const REQUESTS_METRIC: &str = "header_filter_requests";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| Box::new(FilterRoot { settings: None }));
}}

/// The plugin configuration (JSON); missing fields take the defaults.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FilterConfig {
    /// The request header to read and echo back.
    request_header: String,
    /// Headers added to every response, in order.
    response_headers: Vec<(String, String)>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            request_header: "user-agent".to_string(),
            response_headers: vec![
                ("x-wasm-filter".to_string(), "rust".to_string()),
                ("x-greeting".to_string(), "hello".to_string()),
            ],
        }
    }
}

/// What every HTTP context of a configured root shares.
struct Settings {
    config: FilterConfig,
    requests_metric: u32,
}

// === impl FilterRoot ===

struct FilterRoot {
    settings: Option<Rc<Settings>>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = if bytes.iter().all(u8::is_ascii_whitespace) {
            FilterConfig::default()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(config) => config,
                Err(e) => {
                    error!("header_filter: bad configuration: {e}");
                    return false;
                }
            }
        };
        let requests_metric = match hostcalls::define_metric(MetricType::Counter, REQUESTS_METRIC) {
            Ok(id) => id,
            Err(status) => {
                error!("header_filter: cannot define {REQUESTS_METRIC}: {status:?}");
                return false;
            }
        };
        self.settings = Some(Rc::new(Settings {
            config,
            requests_metric,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = Rc::clone(self.settings.as_ref()?);
        Some(Box::new(HeaderFilter {
            settings,
            request_value: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// === impl HeaderFilter ===

struct HeaderFilter {
    settings: Rc<Settings>,
    /// The configured request header's value, once the request headers were seen.
    request_value: Option<String>,
}

impl Context for HeaderFilter {}

impl HttpContext for HeaderFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = &self.settings.config.request_header;
        self.request_value = self.get_http_request_header(name);
        let _ = hostcalls::increment_metric(self.settings.requests_metric, 1);
        debug!(
            "header_filter: {name}={}",
            self.request_value.as_deref().unwrap_or("-")
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.settings.config.response_headers {
            self.add_http_response_header(name, value);
        }
        let value = self.request_value.as_deref().unwrap_or("-");
        self.add_http_response_header("x-request-header", value);
        Action::Continue
    }
}
