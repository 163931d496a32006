//! The generic document tree (from YAML or JSON) with source positions, before any Envoy meaning.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};

use crate::error::ConfigError;

/// A 1-based position in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A value of the document and where it starts (YAML only; JSON nodes have no position).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Option<Pos>,
}

/// What a node holds. Scalars keep their text: their type is decided by the field that reads them,
/// as Envoy's YAML-to-proto conversion does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A scalar. `quoted` is true for quoted and block YAML scalars and JSON strings: those are
    /// always strings, while plain scalars and JSON numbers and booleans may be read as numbers.
    Scalar { text: String, quoted: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order (duplicate keys are kept here and reported by the reader).
    Map(Vec<Entry>),
}

/// One key of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Option<Pos>,
    pub value: Node,
}

impl Node {
    /// The entries if this is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The document as JSON, for `/config_dump`: plain scalars that read as JSON numbers,
    /// booleans or null become those; every other scalar is a string.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Scalar { text, quoted: true } => J::String(text.clone()),
            Value::Scalar { text, quoted: false } => match text.as_str() {
                "true" | "True" | "TRUE" => J::Bool(true),
                "false" | "False" | "FALSE" => J::Bool(false),
                "null" | "~" => J::Null,
                t => serde_json::from_str::<serde_json::Number>(t).map_or_else(|_| J::String(text.clone()), J::Number),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// A short name of the node's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses YAML text into a tree. Aliases are expanded; mapping keys tagged `!ignore` are dropped
/// (as Envoy does). An empty document is `Null`.
pub(crate) fn parse_yaml(text: &str) -> Result<Node, ConfigError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(syntax_error)?;
        builder.event(event, span)?;
    }
    Ok(builder.root.unwrap_or(Node { value: Value::Null, pos: None }))
}

fn syntax_error(error: ScanError) -> ConfigError {
    let mark = error.marker();
    ConfigError {
        path: String::new(),
        line: Some(mark.line()),
        column: Some(mark.col() + 1),
        message: format!("YAML syntax error: {}", error.info()),
    }
}

fn pos(span: &Span) -> Option<Pos> {
    Some(Pos { line: span.start.line(), column: span.start.col() + 1 })
}

/// Deeper nesting is refused (no Envoy config comes close; it keeps recursion over the tree bounded).
const MAX_DEPTH: usize = 256;

/// Aliases may repeat anchored subtrees; past this many nodes the document is refused (a few
/// nested aliases could otherwise expand to billions of nodes).
const MAX_ALIAS_NODES: usize = 1_000_000;

/// A collection being built.
enum Frame {
    Seq { items: Vec<Node>, pos: Option<Pos>, anchor: usize },
    Map { entries: Vec<Entry>, key: Option<PendingKey>, pos: Option<Pos>, anchor: usize },
}

struct PendingKey {
    text: String,
    pos: Option<Pos>,
    ignored: bool,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes and their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    /// Nodes copied by alias expansion so far.
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ConfigError> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ConfigError {
                        path: String::new(),
                        line: Some(span.start.line()),
                        column: Some(span.start.col() + 1),
                        message: "only one YAML document is allowed".into(),
                    });
                }
            }
            Event::Alias(id) => {
                let error = |message: &str| ConfigError {
                    path: String::new(),
                    line: Some(span.start.line()),
                    column: Some(span.start.col() + 1),
                    message: message.into(),
                };
                let (node, size) = self.anchors.get(&id).ok_or_else(|| error("YAML alias to an unknown anchor"))?;
                self.alias_nodes += size;
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(error("YAML aliases expand to too many nodes"));
                }
                let node = node.clone();
                self.complete(node, 0, false, &span)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_deref().is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let quoted = style != ScalarStyle::Plain || is_str_tag;
                let value = if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text: text.into_owned(), quoted }
                };
                self.complete(Node { value, pos: pos(&span) }, anchor, is_ignore(tag.as_deref()), &span)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.check_depth(&span)?;
                self.stack.push(Frame::Seq { items: Vec::new(), pos: pos(&span), anchor });
            }
            Event::MappingStart(anchor, _) => {
                self.check_depth(&span)?;
                self.stack.push(Frame::Map { entries: Vec::new(), key: None, pos: pos(&span), anchor });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { items, pos, anchor }) => (Node { value: Value::Seq(items), pos }, anchor),
                    Some(Frame::Map { entries, pos, anchor, .. }) => (Node { value: Value::Map(entries), pos }, anchor),
                    None => return Ok(()),
                };
                self.complete(node, anchor, false, &span)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn check_depth(&self, span: &Span) -> Result<(), ConfigError> {
        if self.stack.len() < MAX_DEPTH {
            return Ok(());
        }
        Err(ConfigError {
            path: String::new(),
            line: Some(span.start.line()),
            column: Some(span.start.col() + 1),
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        })
    }

    /// Places a finished node in its parent (as a list item, a mapping key or a mapping value).
    fn complete(&mut self, node: Node, anchor: usize, ignore_tag: bool, span: &Span) -> Result<(), ConfigError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size(&node)));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        _ => {
                            return Err(ConfigError {
                                path: String::new(),
                                line: Some(span.start.line()),
                                column: Some(span.start.col() + 1),
                                message: "mapping keys must be scalars".into(),
                            });
                        }
                    };
                    *key = Some(PendingKey { text, pos: node.pos, ignored: ignore_tag });
                }
                Some(pending) if pending.ignored => {}
                Some(pending) => entries.push(Entry { key: pending.text, key_pos: pending.pos, value: node }),
            },
        }
        Ok(())
    }
}

/// The number of nodes in a tree.
fn size(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|e| size(&e.value)).sum::<usize>(),
        Value::Null | Value::Scalar { .. } => 1,
    }
}

/// Reports every mapping key given twice, anywhere in the tree (Envoy refuses them too).
pub(crate) fn duplicate_keys(node: &Node, path: &str, errors: &mut Vec<ConfigError>) {
    match &node.value {
        Value::Map(entries) => {
            for (i, entry) in entries.iter().enumerate() {
                let entry_path = if path.is_empty() { entry.key.clone() } else { format!("{path}.{}", entry.key) };
                if entries[..i].iter().any(|e| e.key == entry.key) {
                    errors.push(ConfigError {
                        path: entry_path.clone(),
                        line: entry.key_pos.map(|p| p.line),
                        column: entry.key_pos.map(|p| p.column),
                        message: "duplicate key".into(),
                    });
                }
                duplicate_keys(&entry.value, &entry_path, errors);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                duplicate_keys(item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Null | Value::Scalar { .. } => {}
    }
}

/// Envoy drops mapping entries whose key is tagged `!ignore` (used to hold YAML anchors).
fn is_ignore(tag: Option<&Tag>) -> bool {
    tag.is_some_and(|t| t.handle == "!" && t.suffix == "ignore")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> (&str, bool) {
        match &node.value {
            Value::Scalar { text, quoted } => (text, *quoted),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_quoting_and_nulls() {
        let root = parse_yaml("a: 1\nb: \"2\"\nc:\nd: |\n  x\n  y\n").unwrap();
        let map = root.as_map().unwrap();
        assert_eq!(map[0].key, "a");
        assert_eq!(map[0].key_pos, Some(Pos { line: 1, column: 1 }));
        assert_eq!(scalar(&map[0].value), ("1", false));
        assert_eq!(map[0].value.pos, Some(Pos { line: 1, column: 4 }));
        assert_eq!(scalar(&map[1].value), ("2", true));
        assert_eq!(map[2].value.value, Value::Null);
        assert_eq!(scalar(&map[3].value), ("x\ny\n", true));
    }

    #[test]
    fn aliases_and_ignored_keys() {
        let root = parse_yaml("!ignore defs: &addr {address: 1.2.3.4}\nuse: *addr\n").unwrap();
        let map = root.as_map().unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map[0].key, "use");
        let inner = map[0].value.as_map().unwrap();
        assert_eq!(scalar(&inner[0].value), ("1.2.3.4", false));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let error = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.message.starts_with("YAML syntax error: "), "{error}");
        assert!(error.line.is_some());
        assert_eq!(error.path, "");
    }

    #[test]
    fn deep_nesting_is_refused() {
        assert!(parse_yaml(&"[".repeat(100_000)).is_err());
        let block: String = (0..300).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        let error = parse_yaml(&block).unwrap_err();
        assert_eq!(error.message, "nesting deeper than 256 levels");
        assert_eq!(error.line, Some(257));
        assert!(parse_yaml(&format!("{}{}", "[".repeat(200), "]".repeat(200))).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let error = parse_yaml(&yaml).unwrap_err();
        assert_eq!(error.message, "YAML aliases expand to too many nodes");
    }

    #[test]
    fn one_document_only() {
        let error = parse_yaml("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(error.message, "only one YAML document is allowed");
        assert_eq!(error.line, Some(2));
    }
}
