//! [`Builder`]: the configurable form of [`compile_protos`](crate::compile_protos).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::generator::{Generator, Options};
use crate::Error;

/// The file, next to the generated packages, that includes them all as a
/// tree of modules (what `grpc_blocking::include_protos!()` includes).
pub(crate) const INCLUDE_FILE: &str = "_includes.rs";

/// Configures and runs the code generation; made by [`configure()`](crate::configure).
///
/// Every setter takes and returns the builder, so a build script reads as one
/// chain:
///
/// ```no_run
/// // build.rs
/// fn main() {
///     let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
///     if let Err(e) = grpc_blocking_codegen::configure()
///         .build_server(false)
///         .file_descriptor_set_path(out_dir.join("example_descriptor.bin"))
///         .compile(&["proto/example.proto"], &["proto"])
///     {
///         panic!("{e}");
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    build_server: bool,
    build_client: bool,
    default_stubs: bool,
    file_descriptor_set_path: Option<PathBuf>,
    emit_rerun_if_changed: Option<bool>,
    extern_paths: Vec<(String, String)>,
    type_attributes: Vec<(String, String)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            out_dir: None,
            build_server: true,
            build_client: true,
            default_stubs: false,
            file_descriptor_set_path: None,
            emit_rerun_if_changed: None,
            extern_paths: Vec::new(),
            type_attributes: Vec::new(),
        }
    }
}

impl Builder {
    /// A builder with the defaults: server and client code, output to
    /// `OUT_DIR`, no descriptor set file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the generated files to `dir` instead of `OUT_DIR` (created if
    /// missing). There is one file per proto package, named after the
    /// package (`nameko.rs`, `a.b.c.rs`), and `_.rs` for protos without a
    /// package.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to generate the service traits and the `XxxServer<T>`
    /// adapters (default `true`).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Whether to generate the `XxxClient` types (default `true`).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Whether the service traits' methods get a default body that answers
    /// `UNIMPLEMENTED` (default `false`: every method must be implemented).
    /// With `true`, an implementation overrides only the methods it serves,
    /// as tonic-build's `generate_default_stubs` allows.
    pub fn generate_default_stubs(mut self, enable: bool) -> Self {
        self.default_stubs = enable;
        self
    }

    /// Also writes the encoded `FileDescriptorSet` of the compiled protos
    /// (imports and source info included) to `path`, e.g. for a reflection
    /// service to `include_bytes!`. A relative path is relative to the
    /// current directory, which in a build script is the package's root; to
    /// put it next to the generated code, join it to `OUT_DIR`.
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.file_descriptor_set_path = Some(path.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines for the protos, the
    /// files they import and the include directories. The default is to print
    /// them when running in a build script (`OUT_DIR` is set).
    ///
    /// An include directory that contains `OUT_DIR` (such as a package's
    /// root) is left out, as it would change on every build; its proto files
    /// are still listed one by one.
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = Some(enable);
        self
    }

    /// Uses existing Rust types for a proto package or type instead of
    /// generating them, like [`prost_build::Config::extern_path`]: e.g.
    /// `.extern_path(".nameko", "::grpc_blocking_examples::nameko")`.
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.extern_paths
            .push((proto_path.into(), rust_path.into()));
        self
    }

    /// Adds an attribute to the generated messages and enums matching
    /// `path`, like [`prost_build::Config::type_attribute`]: e.g.
    /// `.type_attribute(".", "#[derive(Eq)]")`.
    pub fn type_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.type_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Compiles `protos` (found as given or relative to one of `includes`;
    /// imports are looked up in `includes`, and the well-known
    /// `google/protobuf/*.proto` files are built in) and writes the Rust code
    /// for their messages and services.
    ///
    /// # Errors
    ///
    /// See [`Error`]: a missing proto, a proto that does not compile (with
    /// the file and `line:column`), a service whose Rust names collide, or a
    /// file that cannot be written.
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let protos: Vec<&Path> = protos.iter().map(AsRef::as_ref).collect();
        let includes: Vec<&Path> = includes.iter().map(AsRef::as_ref).collect();
        let mut watched = Watched::default();
        let result = self.compile_watching(&protos, &includes, &mut watched);
        // Also after an error: the files read so far are the ones to fix.
        let emit = self
            .emit_rerun_if_changed
            .unwrap_or_else(|| env::var_os("OUT_DIR").is_some());
        if emit {
            for path in &watched.paths {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        result
    }

    /// [`compile`](Self::compile), recording the files and directories the
    /// result depends on in `watched` instead of printing them.
    pub(crate) fn compile_watching(
        &self,
        protos: &[&Path],
        includes: &[&Path],
        watched: &mut Watched,
    ) -> Result<(), Error> {
        let env_out_dir = env::var_os("OUT_DIR").map(PathBuf::from);
        let out_dir = self
            .out_dir
            .clone()
            .or_else(|| env_out_dir.clone())
            .ok_or(Error::NoOutDir)?;

        for include in includes {
            let contains_out_dir = env_out_dir
                .as_deref()
                .is_some_and(|out| is_within(out, include));
            if include.is_dir() && !contains_out_dir {
                watched.add(include);
            }
        }
        for proto in protos {
            let found = proto.is_file() || includes.iter().any(|i| i.join(proto).is_file());
            if !found {
                return Err(Error::ProtoNotFound {
                    path: proto.to_path_buf(),
                    includes: includes.iter().map(|i| i.to_path_buf()).collect(),
                });
            }
            if proto.is_file() {
                watched.add(proto);
            }
        }

        let mut compiler = protox::Compiler::new(includes)?;
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files(protos)?;
        for file in compiler.files() {
            if let Some(path) = file.path() {
                watched.add(path);
            }
        }
        let fds = compiler.file_descriptor_set();

        if let Some(path) = &self.file_descriptor_set_path {
            fs::write(path, compiler.encode_file_descriptor_set()).map_err(|error| Error::Io {
                action: format!("writing the file descriptor set to `{}`", path.display()),
                error,
            })?;
        }

        fs::create_dir_all(&out_dir).map_err(|error| Error::Io {
            action: format!("creating the output directory `{}`", out_dir.display()),
            error,
        })?;
        let errors = Rc::new(RefCell::new(Vec::new()));
        let options = Options {
            server: self.build_server,
            client: self.build_client,
            default_stubs: self.default_stubs,
        };
        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            // The generated code reaches prost and the well-known types
            // through grpc-blocking's re-exports: a crate needs no `prost`
            // or `prost-types` dependency of its own.
            .prost_path("::grpc_blocking::prost")
            .prost_types_path("::grpc_blocking::prost_types")
            .include_file(INCLUDE_FILE)
            .service_generator(Box::new(Generator::new(options, &fds, Rc::clone(&errors))));
        for (proto_path, rust_path) in &self.extern_paths {
            config.extern_path(proto_path, rust_path);
        }
        for (path, attribute) in &self.type_attributes {
            config.type_attribute(path, attribute);
        }
        config.compile_fds(fds).map_err(|error| Error::Io {
            action: format!("generating code into `{}`", out_dir.display()),
            error,
        })?;
        drop(config);

        let first_error = errors.borrow_mut().drain(..).next();
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The files and directories a compile depends on, each once, in the order
/// first seen: the `cargo:rerun-if-changed` paths.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    pub(crate) paths: Vec<PathBuf>,
    seen: BTreeSet<PathBuf>,
}

impl Watched {
    fn add(&mut self, path: &Path) {
        if self.seen.insert(path.to_path_buf()) {
            self.paths.push(path.to_path_buf());
        }
    }
}

/// Whether `path` is `dir` or inside it (after resolving both).
fn is_within(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}
