//! `envoy.filters.http.header_mutation`, as Envoy 1.40's: the filter's request and response
//! header mutations, then its routes' (`HeaderMutationPerRoute`, the most specific first
//! unless `most_specific_header_mutations_wins`), each applied in turn, values formatted as
//! access logs format them.

use std::sync::Arc;

use wasmproxy_config::model::{AppendAction, HeaderMutationFilter, HeaderOp, MutationBlock};
use wasmproxy_host::Headers;

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::Verdict;
use crate::matcher::ValueMatchers;
use crate::observe::access_log::{Record, header_value_text};
use crate::stream_info::StreamRef;

/// A block of mutations with its name matchers compiled.
pub struct Block {
    request: Vec<Op>,
    response: Vec<Op>,
}

/// One mutation, compiled.
enum Op {
    Remove(String),
    Append(wasmproxy_config::model::HeaderToAdd),
    RemoveOnMatch(ValueMatchers),
}

impl Block {
    /// Compiles `block`; `Err` names a regex that does not compile.
    pub fn new(block: &MutationBlock) -> Result<Block, (String, regex::Error)> {
        let ops = |list: &[HeaderOp]| -> Result<Vec<Op>, (String, regex::Error)> {
            list.iter()
                .map(|op| {
                    Ok(match op {
                        HeaderOp::Remove(name) => Op::Remove(name.clone()),
                        HeaderOp::Append(h) => Op::Append(h.clone()),
                        HeaderOp::RemoveOnMatch(m) => Op::RemoveOnMatch(ValueMatchers::new(std::slice::from_ref(m))?),
                    })
                })
                .collect()
        };
        Ok(Block { request: ops(&block.request)?, response: ops(&block.response)? })
    }
}

/// The filter's configuration, compiled.
pub struct Config {
    block: Block,
    most_specific_wins: bool,
}

impl Config {
    /// Compiles `config`.
    pub fn new(config: &HeaderMutationFilter) -> Result<Config, (String, regex::Error)> {
        Ok(Config { block: Block::new(&config.mutations)?, most_specific_wins: config.most_specific_wins })
    }
}

/// Applies `ops` to `headers` in turn; `request` is the request's headers when `headers`
/// are the response's.
fn apply(ops: &[Op], headers: &mut Headers, request: Option<&Headers>, info: &StreamRef) {
    for op in ops {
        match op {
            Op::Remove(name) => headers.remove(name.as_bytes()),
            Op::RemoveOnMatch(names) => headers.remove_if(|n| names.any(&String::from_utf8_lossy(n))),
            Op::Append(h) => {
                let value = {
                    let info = info.borrow();
                    let r = match request {
                        None => {
                            Record { request: Some(headers), response: None, info: &info, response_code_set: false }
                        }
                        Some(req) => {
                            Record { request: Some(req), response: Some(headers), info: &info, response_code_set: true }
                        }
                    };
                    header_value_text(&h.value, &r)
                };
                if value.is_empty() && !h.keep_empty_value {
                    continue;
                }
                let (name, present) = (h.name.as_bytes(), headers.get(h.name.as_bytes()).is_some());
                match h.action {
                    AppendAction::AppendIfExistsOrAdd => headers.add(name, value.as_bytes()),
                    AppendAction::AddIfAbsent if !present => headers.add(name, value.as_bytes()),
                    AppendAction::OverwriteIfExistsOrAdd => headers.set(name, value.as_bytes()),
                    AppendAction::OverwriteIfExists if present => headers.set(name, value.as_bytes()),
                    _ => {}
                }
            }
        }
    }
}

/// One stream through the filter: its routes' blocks, in the order they apply (after the
/// filter's), and the request's headers kept for the response's formats.
pub struct HeaderMutationStream {
    info: StreamRef,
    config: Arc<Config>,
    routes: Vec<Arc<Block>>,
    request: Option<Headers>,
}

impl HeaderMutationStream {
    /// A stream on `route` through the filter `name` configured by `config`.
    pub fn new(
        name: &str,
        config: &Arc<Config>,
        info: &StreamRef,
        route: Option<StreamRoute<'_>>,
    ) -> HeaderMutationStream {
        let mut routes: Vec<Arc<Block>> = route
            .map(|r| {
                r.filters
                    .configs(name)
                    .filter_map(|c| match c {
                        RouteConfig::HeaderMutation(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if config.most_specific_wins {
            routes.reverse();
        }
        HeaderMutationStream { info: info.clone(), config: config.clone(), routes, request: None }
    }

    fn blocks(&self) -> impl Iterator<Item = &Block> {
        std::iter::once(&self.config.block).chain(self.routes.iter().map(|b| &**b))
    }

    /// The request headers: the request mutations.
    pub fn request_headers(&mut self, headers: &mut Headers) -> Verdict {
        for block in self.blocks() {
            apply(&block.request, headers, None, &self.info);
        }
        if self.blocks().any(|b| !b.response.is_empty()) {
            self.request = Some(headers.clone());
        }
        Verdict::Continue
    }

    /// The response headers: the response mutations.
    pub fn response_headers(&mut self, headers: &mut Headers) -> Verdict {
        let request = self.request.take().unwrap_or_default();
        for block in self.blocks() {
            apply(&block.response, headers, Some(&request), &self.info);
        }
        Verdict::Continue
    }
}
