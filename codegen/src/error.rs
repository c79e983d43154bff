//! The error type of the code generator.

use std::fmt;
use std::io;
use std::path::PathBuf;

use miette::{Diagnostic, SourceCode, SourceSpan};

/// Everything that can make [`compile_protos`](crate::compile_protos) or
/// [`Builder::compile`](crate::Builder::compile) fail.
///
/// The `Display` text is complete on its own, with file names and
/// `line:column` positions where they are known, because a build script
/// usually reports the error with `panic!("{e}")` and nothing else. For the
/// same reason no variant repeats its cause through
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file, or a file it imports, could not be read, parsed or
    /// checked (syntax error, unknown type, missing import, ...).
    #[error(transparent)]
    Proto(ProtoError),

    /// A `.proto` file passed to `compile` exists neither as given nor
    /// relative to any include directory.
    #[error(
        "proto file `{}` not found (looked for it as given and under the include directories {includes:?})",
        path.display()
    )]
    ProtoNotFound {
        /// The path as it was passed to `compile`.
        path: PathBuf,
        /// The include directories that were searched.
        includes: Vec<PathBuf>,
    },

    /// The protos are valid, but the Rust code for a service cannot be
    /// generated, e.g. because two methods map to the same Rust name.
    #[error("cannot generate code for service `{service}`: {message}")]
    Service {
        /// The service's full proto name (`package.Service`).
        service: String,
        /// What went wrong.
        message: String,
    },

    /// No output directory: `OUT_DIR` is not set (the code is not running in
    /// a build script) and [`Builder::out_dir`](crate::Builder::out_dir) was
    /// not called.
    #[error(
        "no output directory: OUT_DIR is not set (not running in a build script?) and no out_dir was configured"
    )]
    NoOutDir,

    /// Reading or writing a file failed.
    #[error("{action}: {error}")]
    Io {
        /// What was being done, e.g. "writing generated code to `...`".
        action: String,
        /// The underlying I/O error.
        error: io::Error,
    },
}

impl From<protox::Error> for Error {
    fn from(error: protox::Error) -> Self {
        Error::Proto(ProtoError::new(error))
    }
}

/// A position in a `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name, as protox names it (relative to its include directory).
    pub file: Option<String>,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The 1-based column, when known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(file) = &self.file {
            parts.push(file.clone());
        }
        if let Some(line) = self.line {
            parts.push(line.to_string());
            if let Some(column) = self.column {
                parts.push(column.to_string());
            }
        }
        f.write_str(&parts.join(":"))
    }
}

/// One problem found in a `.proto` file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoDiagnostic {
    /// Where the problem is.
    pub location: Location,
    /// What the problem is, e.g. "expected ';', but found 'rpc'".
    pub message: String,
    /// A hint on how to fix it, when protox gives one.
    pub help: Option<String>,
}

impl fmt::Display for ProtoDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let location = self.location.to_string();
        if location.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{location}: {}", self.message)?;
        }
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// A `.proto` file could not be compiled: the protox error, with the file
/// name and `line:column` of each problem pulled out of it.
///
/// Displays as one `file:line:column: message` line per problem, the way
/// compilers report errors.
pub struct ProtoError {
    diagnostics: Vec<ProtoDiagnostic>,
    inner: protox::Error,
}

impl ProtoError {
    fn new(inner: protox::Error) -> Self {
        let mut diagnostics = Vec::new();
        let source = inner.source_code();
        diagnostics.push(diagnose(&inner, source, inner.file()));
        if let Some(related) = inner.related() {
            for other in related {
                // Related problems of a parse error are in the same file and
                // carry no source of their own.
                let other_source = other.source_code().or(source);
                diagnostics.push(diagnose(other, other_source, inner.file()));
            }
        }
        ProtoError { diagnostics, inner }
    }

    /// Every problem found, the first one being the main error.
    pub fn diagnostics(&self) -> &[ProtoDiagnostic] {
        &self.diagnostics
    }

    /// The file of the first problem, as protox names it (relative to its
    /// include directory), when known.
    pub fn file(&self) -> Option<&str> {
        self.diagnostics.first()?.location.file.as_deref()
    }

    /// The 1-based line of the first problem, when known.
    pub fn line(&self) -> Option<usize> {
        self.diagnostics.first()?.location.line
    }

    /// The 1-based column of the first problem, when known.
    pub fn column(&self) -> Option<usize> {
        self.diagnostics.first()?.location.column
    }

    /// The message of the first problem, without its position.
    pub fn message(&self) -> &str {
        self.diagnostics
            .first()
            .map_or("invalid proto file", |d| d.message.as_str())
    }

    /// The protox error itself, e.g. to render it with `miette`.
    pub fn protox_error(&self) -> &protox::Error {
        &self.inner
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtoError")
            .field("diagnostics", &self.diagnostics)
            .finish_non_exhaustive()
    }
}

impl std::error::Error for ProtoError {}

/// Pulls file, line, column, message and help out of one miette diagnostic.
fn diagnose(
    diagnostic: &(impl Diagnostic + ?Sized),
    source: Option<&dyn SourceCode>,
    fallback_file: Option<&str>,
) -> ProtoDiagnostic {
    let mut location = Location {
        file: fallback_file.map(str::to_owned),
        line: None,
        column: None,
    };
    let span = diagnostic.labels().and_then(|labels| {
        let labels: Vec<_> = labels.collect();
        labels
            .iter()
            .find(|label| label.primary())
            .or(labels.first())
            .map(|label| *label.inner())
    });
    match (span, source) {
        (Some(span), Some(source)) => locate(span, source, &mut location),
        // protox gives "reached end of file" errors no position: the end of
        // the file is the position.
        (None, Some(source)) if diagnostic.to_string().contains("end of file") => {
            locate_end(source, &mut location);
        }
        _ => {}
    }
    ProtoDiagnostic {
        location,
        message: diagnostic.to_string(),
        help: diagnostic.help().map(|help| help.to_string()),
    }
}

fn locate_end(source: &dyn SourceCode, location: &mut Location) {
    let start = SourceSpan::new(0.into(), 0);
    if let Ok(contents) = source.read_span(&start, 0, usize::MAX) {
        if let Some(name) = contents.name() {
            location.file = Some(name.to_owned());
        }
        let text = String::from_utf8_lossy(contents.data());
        let last_line = text.rsplit('\n').next().unwrap_or_default();
        location.line = Some(text.matches('\n').count() + 1);
        location.column = Some(last_line.chars().count() + 1);
    }
}

fn locate(span: SourceSpan, source: &dyn SourceCode, location: &mut Location) {
    if let Ok(contents) = source.read_span(&span, 0, 0) {
        if let Some(name) = contents.name() {
            location.file = Some(name.to_owned());
        }
        location.line = Some(contents.line() + 1);
        location.column = Some(contents.column() + 1);
    }
}
