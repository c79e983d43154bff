//! The file descriptors a generated server embeds for reflection: for each
//! service, its file's encoded `FileDescriptorProto` and those of every file
//! it depends on, transitively (the well-known types included), without
//! source info (comments and spans are for code, not for clients).

use std::collections::{HashMap, HashSet};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// The encoded files each service needs, by the service's full name.
#[derive(Debug, Default)]
pub(crate) struct Descriptors {
    by_service: HashMap<String, Vec<Vec<u8>>>,
}

impl Descriptors {
    /// Indexes the services of `fds` (which holds every file, imports
    /// included).
    pub(crate) fn new(fds: &FileDescriptorSet) -> Self {
        let files: HashMap<&str, &FileDescriptorProto> =
            fds.file.iter().map(|f| (f.name(), f)).collect();
        let mut by_service = HashMap::new();
        for file in &fds.file {
            if file.service.is_empty() {
                continue;
            }
            let encoded = closure(file, &files);
            for service in &file.service {
                let full_name = if file.package().is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{}.{}", file.package(), service.name())
                };
                by_service.insert(full_name, encoded.clone());
            }
        }
        Descriptors { by_service }
    }

    /// The encoded files of service `full_name`: its own first, then its
    /// dependencies.
    pub(crate) fn of(&self, full_name: &str) -> &[Vec<u8>] {
        self.by_service
            .get(full_name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// `file` and every file it depends on, transitively, each once, encoded
/// without source info.
fn closure(
    file: &FileDescriptorProto,
    files: &HashMap<&str, &FileDescriptorProto>,
) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut todo = vec![file];
    while let Some(f) = todo.pop() {
        if !seen.insert(f.name().to_owned()) {
            continue;
        }
        order.push(f);
        for dep in f.dependency.iter().rev() {
            if let Some(d) = files.get(dep.as_str()) {
                todo.push(d);
            }
        }
    }
    order
        .into_iter()
        .map(|f| {
            let mut f = f.clone();
            f.source_code_info = None;
            f.encode_to_vec()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(
        name: &str,
        package: &str,
        deps: &[&str],
        service: Option<&str>,
    ) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            service: service
                .map(|s| {
                    vec![prost_types::ServiceDescriptorProto {
                        name: Some(s.into()),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            source_code_info: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_carries_its_file_then_its_dependencies_once_each() {
        let fds = FileDescriptorSet {
            file: vec![
                file("base.proto", "b", &[], None),
                file("mid.proto", "m", &["base.proto"], None),
                file("svc.proto", "s", &["mid.proto", "base.proto"], Some("Svc")),
            ],
        };
        let d = Descriptors::new(&fds);
        let names: Vec<String> = d
            .of("s.Svc")
            .iter()
            .map(|bytes| {
                let f = FileDescriptorProto::decode(bytes.as_slice()).unwrap();
                assert!(f.source_code_info.is_none());
                f.name().to_owned()
            })
            .collect();
        assert_eq!(names, ["svc.proto", "mid.proto", "base.proto"]);
        assert!(d.of("nope.Svc").is_empty());
    }
}
