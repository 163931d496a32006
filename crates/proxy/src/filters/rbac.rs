//! `envoy.filters.http.rbac`, as Envoy 1.40's: an enforced engine and a shadow one, each
//! policies (the first in name order whose permission and principal match) or a matcher
//! (the first predicate that matches gives the action). A denied request gets 403 `RBAC:
//! access denied`; a route's `RBACPerRoute` replaces the filter's engines (none: no checks).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use wasmproxy_config::model::{
    CidrRange, MatchInput, MatchPredicate, Permission, Principal, Rbac, RbacAction, RbacEngine, RbacMatchAction,
    ValueMatch,
};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::{LocalReply, Verdict};
use crate::matcher::{HeaderMatchers, ValueMatchers, joined_value};
use crate::stream_info::{StreamInfo, StreamRef};

/// A string matcher, compiled.
fn text(m: &ValueMatch) -> Compiled<ValueMatchers> {
    ValueMatchers::new(std::slice::from_ref(m))
}

/// A permission, compiled.
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(HeaderMatchers),
    UrlPath(ValueMatchers),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    DestinationPortRange(u32, u32),
    ServerName(ValueMatchers),
}

/// A principal, compiled.
enum Princ {
    Any,
    And(Vec<Princ>),
    Or(Vec<Princ>),
    Not(Box<Princ>),
    Authenticated(Option<ValueMatchers>),
    PeerIp(CidrRange),
    RemoteIp(CidrRange),
    Header(HeaderMatchers),
    UrlPath(ValueMatchers),
}

/// A matcher predicate, compiled.
enum Pred {
    Single(MatchInput, ValueMatchers),
    Or(Vec<Pred>),
    And(Vec<Pred>),
    Not(Box<Pred>),
}

/// An engine, compiled.
enum Engine {
    Rules { action: RbacAction, policies: Vec<(String, Vec<Perm>, Vec<Princ>)> },
    Matcher { matchers: Vec<(Pred, RbacMatchAction)>, on_no_match: Option<RbacMatchAction> },
}

type Compiled<T> = Result<T, (String, regex::Error)>;

fn header(m: &wasmproxy_config::model::HeaderMatcher) -> Compiled<HeaderMatchers> {
    HeaderMatchers::new(std::slice::from_ref(m))
}

fn perm(p: &Permission) -> Compiled<Perm> {
    let all = |list: &[Permission]| list.iter().map(perm).collect::<Compiled<Vec<_>>>();
    Ok(match p {
        Permission::Any => Perm::Any,
        Permission::And(l) => Perm::And(all(l)?),
        Permission::Or(l) => Perm::Or(all(l)?),
        Permission::Not(p) => Perm::Not(Box::new(perm(p)?)),
        Permission::Header(h) => Perm::Header(header(h)?),
        Permission::UrlPath(m) => Perm::UrlPath(text(m)?),
        Permission::DestinationIp(c) => Perm::DestinationIp(*c),
        Permission::DestinationPort(p) => Perm::DestinationPort(*p),
        Permission::DestinationPortRange(a, b) => Perm::DestinationPortRange(*a, *b),
        Permission::RequestedServerName(m) => Perm::ServerName(text(m)?),
    })
}

fn princ(p: &Principal) -> Compiled<Princ> {
    let all = |list: &[Principal]| list.iter().map(princ).collect::<Compiled<Vec<_>>>();
    Ok(match p {
        Principal::Any => Princ::Any,
        Principal::And(l) => Princ::And(all(l)?),
        Principal::Or(l) => Princ::Or(all(l)?),
        Principal::Not(p) => Princ::Not(Box::new(princ(p)?)),
        Principal::Authenticated(m) => Princ::Authenticated(m.as_ref().map(text).transpose()?),
        Principal::SourceIp(c) | Principal::DirectRemoteIp(c) => Princ::PeerIp(*c),
        Principal::RemoteIp(c) => Princ::RemoteIp(*c),
        Principal::Header(h) => Princ::Header(header(h)?),
        Principal::UrlPath(m) => Princ::UrlPath(text(m)?),
    })
}

fn pred(p: &MatchPredicate) -> Compiled<Pred> {
    let all = |list: &[MatchPredicate]| list.iter().map(pred).collect::<Compiled<Vec<_>>>();
    Ok(match p {
        MatchPredicate::Single { input, value } => Pred::Single(input.clone(), text(value)?),
        MatchPredicate::Or(l) => Pred::Or(all(l)?),
        MatchPredicate::And(l) => Pred::And(all(l)?),
        MatchPredicate::Not(p) => Pred::Not(Box::new(pred(p)?)),
    })
}

fn engine(e: &RbacEngine) -> Compiled<Engine> {
    Ok(match e {
        RbacEngine::Rules(rules) => Engine::Rules {
            action: rules.action,
            policies: rules
                .policies
                .iter()
                .map(|(name, p)| {
                    let perms = p.permissions.iter().map(perm).collect::<Compiled<Vec<_>>>()?;
                    let princs = p.principals.iter().map(princ).collect::<Compiled<Vec<_>>>()?;
                    Ok((name.clone(), perms, princs))
                })
                .collect::<Compiled<Vec<_>>>()?,
        },
        RbacEngine::Matcher(m) => Engine::Matcher {
            matchers: m.matchers.iter().map(|(p, a)| Ok((pred(p)?, a.clone()))).collect::<Compiled<Vec<_>>>()?,
            on_no_match: m.on_no_match.clone(),
        },
    })
}

/// What a request is checked on: its headers and its stream's addresses and TLS.
struct Request<'a> {
    headers: &'a Headers,
    info: &'a StreamInfo,
}

impl Request<'_> {
    /// `:path` without its query and fragment.
    fn path(&self) -> Option<String> {
        let path = String::from_utf8_lossy(self.headers.get(b":path")?).into_owned();
        Some(path.split(['?', '#']).next().unwrap_or_default().to_string())
    }

    fn local(&self) -> SocketAddr {
        self.info.connection.local
    }

    fn peer(&self) -> SocketAddr {
        self.info.connection.peer
    }

    fn server_name(&self) -> &str {
        self.info.connection.requested_server_name.as_deref().unwrap_or_default()
    }
}

impl Perm {
    fn matches(&self, r: &Request<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(l) => l.iter().all(|p| p.matches(r)),
            Perm::Or(l) => l.iter().any(|p| p.matches(r)),
            Perm::Not(p) => !p.matches(r),
            Perm::Header(h) => h.all(r.headers),
            Perm::UrlPath(t) => r.path().is_some_and(|p| t.any(&p)),
            Perm::DestinationIp(c) => c.contains(r.local().ip()),
            Perm::DestinationPort(p) => r.local().port() == *p,
            Perm::DestinationPortRange(a, b) => (*a..*b).contains(&u32::from(r.local().port())),
            Perm::ServerName(t) => t.any(r.server_name()),
        }
    }
}

impl Princ {
    fn matches(&self, r: &Request<'_>) -> bool {
        match self {
            Princ::Any => true,
            Princ::And(l) => l.iter().all(|p| p.matches(r)),
            Princ::Or(l) => l.iter().any(|p| p.matches(r)),
            Princ::Not(p) => !p.matches(r),
            Princ::Authenticated(name) => {
                let Some(tls) = r.info.connection.tls.get() else { return false };
                let Some(name) = name else { return true };
                let Some(cert) = tls.peer.as_deref() else { return name.any("") };
                cert.uri_sans.iter().chain(&cert.dns_sans).any(|san| name.any(san)) || name.any(&cert.subject)
            }
            Princ::PeerIp(c) => c.contains(r.peer().ip()),
            Princ::RemoteIp(c) => c.contains(r.info.downstream_remote.ip()),
            Princ::Header(h) => h.all(r.headers),
            Princ::UrlPath(t) => r.path().is_some_and(|p| t.any(&p)),
        }
    }
}

impl Pred {
    fn matches(&self, r: &Request<'_>) -> bool {
        match self {
            Pred::Single(input, value) => input_value(input, r).is_some_and(|v| value.any(&v)),
            Pred::Or(l) => l.iter().any(|p| p.matches(r)),
            Pred::And(l) => l.iter().all(|p| p.matches(r)),
            Pred::Not(p) => !p.matches(r),
        }
    }
}

/// A matcher input's value for `r` (none: no data, which matches nothing).
fn input_value(input: &MatchInput, r: &Request<'_>) -> Option<String> {
    match input {
        MatchInput::RequestHeader(name) => joined_value(r.headers, name.as_bytes()),
        MatchInput::DestinationIp => Some(r.local().ip().to_string()),
        MatchInput::DestinationPort => Some(r.local().port().to_string()),
        MatchInput::SourceIp | MatchInput::DirectSourceIp => Some(r.peer().ip().to_string()),
        MatchInput::SourcePort => Some(r.peer().port().to_string()),
        MatchInput::ServerName => Some(r.server_name().to_string()).filter(|n| !n.is_empty()),
    }
}

impl Engine {
    /// Whether `r` is allowed, and the effective policy's name (empty if none).
    fn decide(&self, r: &Request<'_>) -> (bool, String) {
        match self {
            Engine::Rules { action, policies } => {
                let matched = policies.iter().find(|(_, perms, princs)| {
                    perms.iter().any(|p| p.matches(r)) && princs.iter().any(|p| p.matches(r))
                });
                let id = matched.map(|(name, ..)| name.clone()).unwrap_or_default();
                let allowed = match action {
                    RbacAction::Allow => matched.is_some(),
                    RbacAction::Deny => matched.is_none(),
                    RbacAction::Log => true,
                };
                (allowed, id)
            }
            Engine::Matcher { matchers, on_no_match } => {
                let action = matchers.iter().find(|(p, _)| p.matches(r)).map(|(_, a)| a).or(on_no_match.as_ref());
                match action {
                    Some(a) => (a.action != RbacAction::Deny, a.name.clone()),
                    None => (false, String::new()),
                }
            }
        }
    }
}

/// The filter's engines, compiled, shared by the workers.
pub struct Config {
    enforced: Option<Engine>,
    shadow: Option<Engine>,
    track_per_rule_stats: bool,
    rules_stat_prefix: String,
    shadow_rules_stat_prefix: String,
}

impl Config {
    /// Compiles `config`; `Err` names a regex that does not compile.
    pub fn new(config: &Rbac) -> Result<Config, (String, regex::Error)> {
        let dotted = |p: &str| if p.is_empty() { String::new() } else { format!("{p}.") };
        Ok(Config {
            enforced: config.enforced.as_ref().map(engine).transpose()?,
            shadow: config.shadow.as_ref().map(engine).transpose()?,
            track_per_rule_stats: config.track_per_rule_stats,
            rules_stat_prefix: dotted(&config.rules_stat_prefix),
            shadow_rules_stat_prefix: dotted(&config.shadow_rules_stat_prefix),
        })
    }
}

/// The filter on a worker.
pub struct RbacFilter {
    name: String,
    config: Arc<Config>,
    scope: Scope,
    allowed: Counter,
    denied: Counter,
    shadow_allowed: Counter,
    shadow_denied: Counter,
    /// `rbac.[<prefix>.]policy.<name>.<outcome>`, each made when first counted.
    per_policy: RefCell<FxHashMap<String, Counter>>,
}

impl RbacFilter {
    /// The filter `name` configured by `config`, counting under `http_prefix`.
    pub fn new(name: String, config: Arc<Config>, store: &Arc<Store>, http_prefix: &str) -> RbacFilter {
        let scope = Scope::new(store, &format!("{http_prefix}rbac."), "http.rbac.", &[]);
        let (rules, shadow) = (&config.rules_stat_prefix, &config.shadow_rules_stat_prefix);
        RbacFilter {
            name,
            allowed: scope.counter(&format!("{rules}allowed")),
            denied: scope.counter(&format!("{rules}denied")),
            shadow_allowed: scope.counter(&format!("{shadow}shadow_allowed")),
            shadow_denied: scope.counter(&format!("{shadow}shadow_denied")),
            scope,
            config,
            per_policy: RefCell::default(),
        }
    }

    /// Counts a policy's outcome, if the configuration in force (`config`: the filter's or
    /// the route's) tracks them; the names take the filter's prefixes, as in Envoy.
    fn count_policy(&self, config: &Config, prefix: &str, policy: &str, outcome: &str) {
        if !config.track_per_rule_stats || policy.is_empty() {
            return;
        }
        let name = format!("{prefix}policy.{policy}.{outcome}");
        self.per_policy.borrow_mut().entry(name).or_insert_with_key(|name| self.scope.counter(name)).inc();
    }
}

/// One stream through the filter: the engines it is checked by.
pub struct RbacStream {
    filter: Rc<RbacFilter>,
    info: StreamRef,
    /// A route's configuration replacing the filter's (`Some(None)`: no checks).
    route: Option<Option<Arc<Config>>>,
}

impl RbacStream {
    /// A stream on `route`.
    pub fn new(filter: &Rc<RbacFilter>, info: &StreamRef, route: Option<StreamRoute<'_>>) -> RbacStream {
        let route = route.and_then(|r| {
            r.filters.configs(&filter.name).find_map(|c| match c {
                RouteConfig::Rbac(config) => Some(config.clone()),
                _ => None,
            })
        });
        RbacStream { filter: filter.clone(), info: info.clone(), route }
    }

    /// The request headers: the shadow engine counted, the enforced one obeyed.
    pub fn request_headers(&self, headers: &Headers) -> Verdict {
        let filter = &self.filter;
        let config = match &self.route {
            Some(None) => return Verdict::Continue,
            Some(Some(config)) => config.clone(),
            None => filter.config.clone(),
        };
        let info = self.info.borrow();
        let request = Request { headers, info: &info };
        if let Some(shadow) = &config.shadow {
            let (allowed, policy) = shadow.decide(&request);
            let prefix = &filter.config.shadow_rules_stat_prefix;
            let outcome = if allowed { "shadow_allowed" } else { "shadow_denied" };
            if allowed {
                filter.shadow_allowed.inc()
            } else {
                filter.shadow_denied.inc()
            }
            filter.count_policy(&config, prefix, &policy, outcome);
        }
        let Some(enforced) = &config.enforced else { return Verdict::Continue };
        let (allowed, policy) = enforced.decide(&request);
        drop(info);
        let prefix = &filter.config.rules_stat_prefix;
        if allowed {
            filter.allowed.inc();
            filter.count_policy(&config, prefix, &policy, "allowed");
            return Verdict::Continue;
        }
        filter.denied.inc();
        filter.count_policy(&config, prefix, &policy, "denied");
        let id = if policy.is_empty() { "none".to_string() } else { policy.replace(char::is_whitespace, "_") };
        self.info.borrow_mut().response_code_details = format!("rbac_access_denied_matched_policy[{id}]").into();
        let body = b"RBAC: access denied".to_vec();
        Verdict::LocalReply(LocalReply { status: 403, body, headers: Headers::new(), grpc_status: None })
    }
}
