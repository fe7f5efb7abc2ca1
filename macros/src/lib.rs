//! The `#[isolated]` attribute. Use it through the `isotest` crate.

use proc_macro::TokenStream;

mod args;
mod expand;
// The checks the runtime applies too, shared as one file; the macro does not use all of them.
#[allow(dead_code)]
#[path = "../../src/validate.rs"]
mod validate;

/// Reruns the test inside fresh namespaces on a copy-on-write root filesystem.
#[proc_macro_attribute]
pub fn isolated(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = item.clone();
    let args = syn::parse::<args::Args>(args);
    let func = syn::parse::<syn::ItemFn>(item);
    match expand::isolated(args, func) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let mut out = original;
            out.extend(TokenStream::from(error.to_compile_error()));
            out
        }
    }
}
