//! The `#[isolated]` attribute. Use it through the `isotest` crate.

use proc_macro::TokenStream;

mod args;
mod expand;
// The checks the runtime applies too, shared as one file; the macro does not use all of them.
#[allow(dead_code)]
#[path = "../../src/validate.rs"]
mod validate;

/// Reruns the test inside fresh Linux namespaces on a copy-on-write root filesystem.
///
/// Put it on an ordinary synchronous test function without arguments; it makes the function a
/// test, so `#[test]` is optional (if you write it, write it *below* `#[isolated]`).
///
/// ```ignore
/// use isotest::isolated;
///
/// #[isolated(hostname = "web1", timeout = "30s", writes = ["/etc/myapp"])]
/// fn installer_writes_only_its_config() {
///     std::fs::write("/etc/myapp/app.conf", "x").unwrap(); // lands in this test's overlay only
/// }
/// ```
///
/// # Arguments
///
/// Every argument is `name = literal` and is checked at compile time; a mistake is reported at
/// the argument that holds it.
///
/// | argument | value | default |
/// | --- | --- | --- |
/// | `hostname` | `"web1"`: an RFC 1123 hostname | the function's name made into a hostname: `installer_writes_config` becomes `installer-writes-config` |
/// | `rootfs` | a root filesystem spec: `"debian:bookworm"`, `"dir:/srv/root"`, an absolute path, ... | `ISOTEST_ROOTFS`, else the default root filesystem |
/// | `timeout` | `"500ms"`, `"30s"`, `"2m"`: a whole number greater than zero and a unit | 60 seconds, or `ISOTEST_TIMEOUT` |
/// | `privileged` | `true` or `false`: `true` skips the user namespace, so the test's root is the host's root and there is **no isolation boundary** | `false` |
/// | `writes` | `["/etc/myapp", "/var/lib/x"]`: the absolute paths the test may create, change or delete; any other write fails the test | not declared: writes are not checked |
/// | `bind` | `["fixtures/data:/data:ro", "/src:/dst"]`: bind mounts `SRC:DST[:ro\|rw]`, `SRC` relative to the crate's manifest directory, `DST` absolute inside the sandbox | none |
/// | `allow_leaks` | `["processes", "mounts"]`: teardown checks to skip (processes left running, mounts left mounted) | every check runs |
///
/// # What the macro expands to
///
/// The function keeps its attributes, visibility, signature and return type; the body becomes
/// a closure handed to the runtime. `#[isolated(hostname = "web1", timeout = "5s")] fn t() {
/// .. }` becomes
///
/// ```ignore
/// #[::core::prelude::v1::test]
/// fn t() {
///     ::isotest::__private::run(
///         &::isotest::__private::Meta {
///             name: "t",
///             module_path: ::core::module_path!(),
///             manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
///             hostname: ::core::option::Option::Some("web1"),
///             timeout_ms: ::core::option::Option::Some(5000u64),
///             ..::isotest::__private::Meta::DEFAULT
///         },
///         move || { .. },
///     )
/// }
/// ```
///
/// A test returning `Result<(), E>` (`E: Debug`) gets a closure returning the same type, so `?`
/// works in the body. `#[should_panic]` and `#[ignore]` stay on the function and behave as
/// without `#[isolated]`.
///
/// # With other test attributes
///
/// `#[test]` is added only when the function carries none. With rstest, put `#[isolated]` after
/// `#[rstest]` and the case attributes: rstest copies it onto each generated case, so every case
/// runs in its own sandbox.
///
/// ```ignore
/// #[rstest]
/// #[case("web1")]
/// #[case("web2")]
/// #[isolated]
/// fn serves(#[case] name: &str) { .. }
/// ```
///
/// Rejected, with a message that names the fix: `async fn` (start a runtime inside the test),
/// generic functions, functions with arguments (the case of `#[isolated]` above `#[rstest]`), and
/// a second test attribute below `#[isolated]` (`#[tokio::test]`, `#[rstest]`, a second
/// `#[test]`). A `#[test]` written *above* `#[isolated]` has run before the macro and is
/// invisible to it: the test would be registered twice, so write `#[test]` below or leave it out.
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
