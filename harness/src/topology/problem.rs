//! One problem found in a topology file: where (key path, line, column), what, and how to fix it.

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Key path in the document (`leaves[0].remotes[0].hubs[1]`), empty for syntax errors.
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}
