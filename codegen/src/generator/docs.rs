//! Doc comments of generated items: the proto's own comments, then what the
//! generator says of the item.

use proc_macro2::TokenStream;
use prost_build::Comments;
use quote::quote;

/// The doc comment lines of a proto element, escaped by prost-build the way
/// it escapes message docs (links, brackets; code blocks are already made
/// non-doctests by its `cleanup-markdown` feature).
pub(crate) fn proto_doc_lines(comments: &Comments) -> Vec<String> {
    let without_detached = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut buf = String::new();
    without_detached.append_with_indent(0, &mut buf);
    let mut lines: Vec<String> = buf
        .lines()
        .map(|line| line.strip_prefix("///").unwrap_or(line).to_owned())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let leading_blank = lines.iter().take_while(|l| l.trim().is_empty()).count();
    lines.drain(..leading_blank);
    lines
}

/// `#[doc]` attributes: the proto comments, a blank line, then `generated`
/// (one paragraph per entry).
pub(crate) fn docs(comments: &Comments, generated: &[String]) -> TokenStream {
    let mut lines = proto_doc_lines(comments);
    for paragraph in generated {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(format!(" {paragraph}"));
    }
    quote! { #(#[doc = #lines])* }
}

/// `#[doc]` attributes with the generated `lines` only (one paragraph each).
pub(crate) fn plain_docs(lines: &[&str]) -> TokenStream {
    docs(
        &Comments::default(),
        &lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>(),
    )
}
