//! Where things are in the config text: dotted key paths (`functions[0].memory_mb`)
//! and their mapping to 1-based line numbers through the spans of a parsed
//! [`ImDocument`].

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// One step of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `server.listen` or `functions[1].env.HOME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// This path extended by table key `key`.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by array index `index`.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// 1-based line of byte `offset` in `text` (offsets past the end count as the last line).
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A node of the parsed document, whichever container holds it.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Table(table) => table.span(),
            Node::Value(value) => value.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(table),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    /// Child by key, with the span of the key itself.
    fn child_key(self, key: &str) -> Option<(Option<Range<usize>>, Node<'a>)> {
        let (key, item) = self.table_like()?.get_key_value(key)?;
        Some((key.span(), Node::Item(item)))
    }

    fn child_index(self, index: usize) -> Option<Node<'a>> {
        let array = match self {
            Node::Item(item) => {
                if let Some(tables) = item.as_array_of_tables() {
                    return tables.get(index).map(Node::Table);
                }
                item.as_array()?
            }
            Node::Table(_) => return None,
            Node::Value(value) => value.as_array()?,
        };
        array.get(index).map(Node::Value)
    }

    /// Every direct child with its path segment and, for keys, the key span.
    fn children(self) -> Vec<(Segment, Option<Range<usize>>, Node<'a>)> {
        if let Some(table) = self.table_like() {
            return table
                .iter()
                .filter_map(|(name, _)| {
                    let (span, node) = self.child_key(name)?;
                    Some((Segment::Key(name.to_owned()), span, node))
                })
                .collect();
        }
        (0..)
            .map_while(|i| {
                self.child_index(i)
                    .map(|node| (Segment::Index(i), None, node))
            })
            .collect()
    }
}

/// Answers "which line is this key on" and "which key is at this offset" for one text.
pub(crate) struct Locator<'a> {
    text: &'a str,
    root: &'a Item,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, doc: &'a ImDocument<String>) -> Self {
        Self {
            text,
            root: doc.as_item(),
        }
    }

    /// Line of the last key of `path` that exists in the document: the key itself
    /// when present, else its nearest present ancestor (e.g. the `[[functions]]`
    /// header of a function that lacks a required key).
    pub(crate) fn line_of_path(&self, path: &KeyPath) -> Option<usize> {
        let mut node = Node::Item(self.root);
        let mut best: Option<Range<usize>> = None;
        for segment in path.segments() {
            let (key_span, child) = match segment {
                Segment::Key(key) => match node.child_key(key) {
                    Some(found) => found,
                    None => break,
                },
                Segment::Index(index) => match node.child_index(*index) {
                    Some(child) => (None, child),
                    None => break,
                },
            };
            if let Some(span) = key_span.or_else(|| child.span()) {
                best = Some(span);
            }
            node = child;
        }
        best.map(|span| line_of(self.text, span.start))
    }

    /// Deepest key path whose key or value covers byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let mut best = None;
        Self::search(
            Node::Item(self.root),
            offset,
            &mut KeyPath::root(),
            &mut best,
        );
        best
    }

    fn search(node: Node<'_>, offset: usize, path: &mut KeyPath, best: &mut Option<KeyPath>) {
        for (segment, key_span, child) in node.children() {
            path.0.push(segment);
            let covers = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
            if covers(key_span) || covers(child.span()) {
                *best = Some(path.clone());
            }
            Self::search(child, offset, path, best);
            path.0.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[server]
listen = \"127.0.0.1:1\"

[[functions]]
name = \"a\"

[[functions]]
name = \"b\"
env = { HOME = \"/root\", \"odd key\" = \"x\" }
";

    fn doc() -> ImDocument<String> {
        ImDocument::parse(TEXT.to_owned()).expect("test document parses")
    }

    #[test]
    fn path_display_uses_dots_indices_and_quotes() {
        let path = KeyPath::root()
            .key("functions")
            .index(2)
            .key("env")
            .key("odd key");
        assert_eq!(path.to_string(), "functions[2].env.\"odd key\"");
        assert_eq!(
            KeyPath::root().key("server").key("listen").to_string(),
            "server.listen"
        );
    }

    #[test]
    fn line_of_counts_newlines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn line_of_path_finds_keys_and_falls_back_to_ancestors() {
        let doc = doc();
        let locator = Locator::new(TEXT, &doc);
        let functions = KeyPath::root().key("functions");
        assert_eq!(
            locator.line_of_path(&KeyPath::root().key("server").key("listen")),
            Some(2)
        );
        assert_eq!(
            locator.line_of_path(&functions.index(1).key("name")),
            Some(8)
        );
        assert_eq!(
            locator.line_of_path(&functions.index(1).key("env").key("HOME")),
            Some(9)
        );
        // Missing key: the header of the function that lacks it.
        assert_eq!(
            locator.line_of_path(&functions.index(1).key("code")),
            Some(7)
        );
        assert_eq!(locator.line_of_path(&KeyPath::root().key("defaults")), None);
    }

    #[test]
    fn path_at_finds_the_deepest_key() {
        let doc = doc();
        let locator = Locator::new(TEXT, &doc);
        let offset = TEXT.find("\"/root\"").expect("value present");
        let path = locator.path_at(offset).expect("offset is inside a value");
        assert_eq!(path.to_string(), "functions[1].env.HOME");
        let offset = TEXT.find("listen").expect("key present");
        let path = locator.path_at(offset).expect("offset is inside a key");
        assert_eq!(path.to_string(), "server.listen");
    }
}
