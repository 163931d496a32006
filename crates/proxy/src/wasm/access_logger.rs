//! The access loggers of a connection manager or a TCP proxy on one worker: Wasm access
//! loggers (each plugin's root context sees every finished stream in `on_log`), then the
//! file, stdout and stderr writers.

use std::rc::Rc;
use std::sync::Arc;

use wasmproxy_host::Headers;

use crate::observe::access_log::{AccessLogger, Record};
use crate::stream_info::StreamRef;
use crate::wasm::http_filter::FilterSlot;

/// One listener's access loggers on one worker.
#[derive(Default)]
pub struct StreamLoggers {
    /// File, stdout and stderr loggers.
    pub writers: Vec<Arc<AccessLogger>>,
    /// Wasm access loggers.
    pub wasm: Vec<Rc<FilterSlot>>,
}

impl StreamLoggers {
    /// Logs a finished stream (a TCP connection has no headers). The Wasm loggers may
    /// change the headers the writers then see, as in Envoy.
    pub fn log(&self, info: &StreamRef, request: &mut Option<Headers>, response: &mut Option<Headers>) {
        for logger in &self.wasm {
            logger.log_request(info, request, response);
        }
        if !self.writers.is_empty() {
            let info = info.borrow();
            let record =
                Record { request: request.as_ref(), response: response.as_ref(), info: &info, response_code_set: true };
            for logger in &self.writers {
                logger.log(&record);
            }
        }
    }
}
