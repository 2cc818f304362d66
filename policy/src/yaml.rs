//! A small YAML tree that remembers where every node came from.
//!
//! Built from yaml-rust2's event parser so that every scalar, sequence and mapping carries the
//! line and column it started at; the config decoder needs those for its diagnostics. Only the
//! subset a config file needs is accepted: one document, no anchors or aliases, no tags, no
//! duplicate mapping keys. Scalars stay text: the decoder decides what type a value must be.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::model::Pos;

/// Deepest nesting accepted: a config never needs more, and it bounds the stack.
const MAX_DEPTH: usize = 64;

/// How a scalar was written; plain scalars are the only ones that can be `null`, booleans or
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    /// Single or double quoted.
    Quoted,
    /// A literal (`|`) or folded (`>`) block.
    Block,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(String, Style),
    Seq(Vec<Node>),
    /// Keys in file order (duplicates are rejected by the parser).
    Map(Vec<(Node, Node)>),
    /// `~`, `null` or an empty plain value.
    Null,
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Null => "nothing (null)",
        }
    }
}

/// A problem with the YAML itself (not with what it says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// The result of parsing: a tree, possibly with non-fatal problems found while building it
/// (duplicate keys, anchors, tags: the tree is still usable to find further errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub root: Node,
    pub errors: Vec<YamlError>,
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

/// A container being filled.
enum Open {
    Seq(Pos, Vec<Node>),
    /// Entries so far, a key waiting for its value, and the keys seen (text → line) to find
    /// duplicates without a quadratic scan.
    Map(Pos, Vec<(Node, Node)>, Option<Node>, HashMap<String, u32>),
}

/// Parse one YAML document. A syntax error is fatal (the tree cannot be trusted past it);
/// other problems are returned in [`Parsed::errors`].
pub fn parse(text: &str) -> Result<Parsed, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut errors = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0u32;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            pos: pos(e.marker()),
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        let at = pos(&mark);
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        pos: at,
                        message: "only one YAML document is allowed per file".into(),
                    });
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(_) => {
                errors.push(YamlError {
                    pos: at,
                    message: "YAML aliases (`*name`) are not supported; write the value out".into(),
                });
                Node {
                    value: Value::Null,
                    pos: at,
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                check_extras(anchor, tag.is_some(), at, &mut errors);
                let value = match style {
                    TScalarStyle::Plain
                        if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") =>
                    {
                        Value::Null
                    }
                    TScalarStyle::Plain => Value::Scalar(text, Style::Plain),
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                        Value::Scalar(text, Style::Quoted)
                    }
                    TScalarStyle::Literal | TScalarStyle::Folded => {
                        Value::Scalar(text, Style::Block)
                    }
                };
                Node { value, pos: at }
            }
            Event::SequenceStart(anchor, tag) => {
                check_extras(anchor, tag.is_some(), at, &mut errors);
                open(&mut stack, Open::Seq(at, Vec::new()), at)?;
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                check_extras(anchor, tag.is_some(), at, &mut errors);
                open(
                    &mut stack,
                    Open::Map(at, Vec::new(), None, HashMap::new()),
                    at,
                )?;
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(p, items)) => Node {
                    value: Value::Seq(items),
                    pos: p,
                },
                _ => return Err(internal(at)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(p, entries, None, _)) => {
                    // A block mapping's start event is marked at its first `:`; the mapping
                    // starts at its first key.
                    let pos = entries.first().map_or(p, |(k, _)| k.pos.min(p));
                    Node {
                        value: Value::Map(entries),
                        pos,
                    }
                }
                _ => return Err(internal(at)),
            },
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, key, seen)) => match key.take() {
                None => {
                    match node.as_str() {
                        None => errors.push(YamlError {
                            pos: node.pos,
                            message: format!("mapping keys must be scalars, found {}", node.kind()),
                        }),
                        Some(k) => {
                            if let Some(first) = seen.get(k) {
                                errors.push(YamlError {
                                    pos: node.pos,
                                    message: format!("duplicate key `{k}` (first at line {first})"),
                                });
                            } else {
                                seen.insert(k.to_string(), node.pos.line);
                            }
                        }
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
    let root = root.unwrap_or(Node {
        value: Value::Null,
        pos: Pos { line: 1, col: 1 },
    });
    Ok(Parsed { root, errors })
}

fn open(stack: &mut Vec<Open>, container: Open, at: Pos) -> Result<(), YamlError> {
    if stack.len() >= MAX_DEPTH {
        return Err(YamlError {
            pos: at,
            message: format!("nesting deeper than {MAX_DEPTH} levels"),
        });
    }
    stack.push(container);
    Ok(())
}

fn internal(at: Pos) -> YamlError {
    YamlError {
        pos: at,
        message: "YAML structure error (unbalanced events)".into(),
    }
}

fn check_extras(anchor: usize, tagged: bool, at: Pos, errors: &mut Vec<YamlError>) {
    if anchor != 0 {
        errors.push(YamlError {
            pos: at,
            message: "YAML anchors (`&name`) are not supported; write the value out".into(),
        });
    }
    if tagged {
        errors.push(YamlError {
            pos: at,
            message: "YAML tags (`!tag`) are not supported".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn builds_a_spanned_tree() {
        let t = parse("a: 1\nb:\n  - x\n  - 'y'\nc: {d: ~}\ne:\n").unwrap();
        assert!(t.errors.is_empty());
        let Value::Map(entries) = &t.root.value else {
            panic!("root is not a map")
        };
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].0.as_str(), Some("a"));
        assert_eq!(entries[0].1.value, Value::Scalar("1".into(), Style::Plain));
        assert_eq!(entries[0].1.pos, p(1, 4));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("b is not a list")
        };
        assert_eq!(items[0].pos, p(3, 5));
        assert_eq!(items[1].value, Value::Scalar("y".into(), Style::Quoted));
        let Value::Map(c) = &entries[2].1.value else {
            panic!("c is not a map")
        };
        assert_eq!(c[0].1.value, Value::Null);
        assert_eq!(
            t.root.pos,
            p(1, 1),
            "a block mapping starts at its first key"
        );
        assert_eq!(
            entries[2].1.pos,
            p(5, 4),
            "a flow mapping starts at its brace"
        );
        assert_eq!(entries[3].1.value, Value::Null);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax error"), "{e}");
        assert!(e.pos.line >= 1);
        let e = parse("a: 1\n b: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e}");
    }

    #[test]
    fn rejects_duplicates_anchors_aliases_tags_and_multiple_documents() {
        let t = parse("a: 1\nb: 2\n'a': 3\n").unwrap();
        assert_eq!(t.errors.len(), 1);
        assert_eq!(t.errors[0].pos, p(3, 1));
        assert!(t.errors[0]
            .message
            .contains("duplicate key `a` (first at line 1)"));
        let t = parse("a: &x 1\nb: *x\nc: !foo 2\n").unwrap();
        let msgs: Vec<_> = t.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].contains("anchors"));
        assert!(msgs[1].contains("aliases"));
        assert!(msgs[2].contains("tags"));
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn empty_document_is_null_and_depth_is_bounded() {
        assert_eq!(parse("").unwrap().root.value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().root.value, Value::Null);
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
