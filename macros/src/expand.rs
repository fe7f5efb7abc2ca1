//! The rewrite: the test function keeps its attributes, visibility and signature; its body
//! becomes a closure handed to `::isotest::__private::run` with the arguments as a `Meta`.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn, LitStr, ReturnType};

use crate::args::Args;

/// Checks the function and rewrites it. The caller turns an error into `compile_error!` beside
/// the unchanged function.
pub fn isolated(args: syn::Result<Args>, func: syn::Result<ItemFn>) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let args = errors.take(args);
    let func = errors.take(func.map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[isolated] goes on a test function: `#[isolated] fn my_test() { ... }`",
        )
    }));
    let already_test = func.as_ref().and_then(|func| errors.take(check(func)));
    match (args, func, already_test, errors.0) {
        (Some(args), Some(func), Some(already_test), None) => {
            Ok(rewrite(&args, func, already_test))
        }
        (.., Some(e)) => Err(e),
        (.., None) => unreachable!("every missing part leaves an error"),
    }
}

/// Collects every error so that one build reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }
}

/// Refuses what cannot be a sandboxed test. Returns whether the function is a test already,
/// so that no second `#[test]` is added.
fn check(func: &ItemFn) -> syn::Result<bool> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if let Some(token) = &sig.asyncness {
        errors.push(syn::Error::new(
            token.span,
            "#[isolated] tests are synchronous; remove `async` and, if the body needs a runtime, \
             start one inside the test, e.g. `tokio::runtime::Runtime::new().unwrap().block_on(async { ... })`",
        ));
    }
    let rstest_case = is_rstest_case(func);
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "`#[isolated]` test functions cannot be generic; write one test per type",
        ));
    }
    if !sig.inputs.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            "`#[isolated]` test functions take no arguments; with rstest, put #[isolated] after \
             #[rstest] so that it applies to each generated case",
        ));
    }
    let mut test_attrs = 0;
    for attr in &func.attrs {
        match test_kind(attr) {
            TestKind::None => {}
            TestKind::Builtin if test_attrs == 0 => test_attrs += 1,
            TestKind::Builtin | TestKind::Other => errors.push(syn::Error::new_spanned(
                attr,
                "second test attribute is supplied, consider removing or changing the order of \
                 your test attributes; #[isolated] already makes the function a test",
            )),
            TestKind::Cases => {
                let path = attr.path().to_token_stream().to_string().replace(' ', "");
                errors.push(syn::Error::new_spanned(
                    attr,
                    format!(
                        "second test attribute is supplied: #[{path}] below #[isolated] makes its \
                         own tests; put #[isolated] after #[{path}] so that it applies to each \
                         generated case"
                    ),
                ))
            }
        }
    }
    match errors.0 {
        Some(e) => Err(e),
        None => Ok(test_attrs > 0 || rstest_case),
    }
}

enum TestKind {
    /// Not a test attribute.
    None,
    /// `#[test]` or `#[::core::prelude::v1::test]`.
    Builtin,
    /// Another crate's test attribute, such as `#[tokio::test]`.
    Other,
    /// An attribute that generates tests from cases, such as `#[rstest]`.
    Cases,
}

fn test_kind(attr: &Attribute) -> TestKind {
    let path = attr.path();
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let Some(last) = segments.last() else {
        return TestKind::None;
    };
    match last.as_str() {
        "test" if segments.len() == 1 => TestKind::Builtin,
        "test" if matches!(segments[0].as_str(), "core" | "std") => TestKind::Builtin,
        "test" => TestKind::Other,
        "rstest" | "test_case" => TestKind::Cases,
        _ => TestKind::None,
    }
}

/// Whether rstest generated this function. rstest writes `#[test]` above the attributes that
/// follow `#[rstest]`, so it has been expanded before this macro runs and is invisible here; the
/// trace it leaves is the angle brackets it always writes around the case's lifetimes, empty
/// for a test without any: `fn case_1<>()`. People do not write `<>` by hand.
fn is_rstest_case(func: &ItemFn) -> bool {
    let generics = &func.sig.generics;
    generics.lt_token.is_some() && generics.params.is_empty()
}

fn rewrite(args: &Args, func: ItemFn, already_test: bool) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = func;
    // Drop rstest's empty `<>` so the rewritten function reads as written.
    sig.generics = syn::Generics::default();
    let test_attr = (!already_test).then(|| quote!(#[::core::prelude::v1::test]));
    let name = LitStr::new(&sig.ident.unraw().to_string(), sig.ident.span());
    let meta = meta(args, &name);
    let (run, body) = match &sig.output {
        ReturnType::Default => (quote!(::isotest::__private::run), quote!(move || #block)),
        // Spanned at the return type, so a type that is not `()` or `Result<(), E>` is reported
        // there.
        ReturnType::Type(_, ty) => (
            quote_spanned!(ty.span()=> ::isotest::__private::run),
            quote!(move || -> #ty #block),
        ),
    };
    quote! {
        #test_attr
        #(#attrs)*
        #vis #sig {
            #run(&#meta, #body)
        }
    }
}

/// `::isotest::__private::Meta { .. }` with the fields the arguments set.
fn meta(args: &Args, name: &LitStr) -> TokenStream {
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let hostname = match &args.hostname {
        Some(h) => some(h.to_token_stream()),
        None => quote!(::core::option::Option::None),
    };
    let mut fields = Vec::new();
    if let Some(rootfs) = &args.rootfs {
        let rootfs = some(rootfs.to_token_stream());
        fields.push(quote!(rootfs: #rootfs,));
    }
    if let Some((ms, span)) = args.timeout_ms {
        let mut lit = Literal::u64_suffixed(ms);
        lit.set_span(span);
        let timeout_ms = some(lit.to_token_stream());
        fields.push(quote!(timeout_ms: #timeout_ms,));
    }
    if let Some(privileged) = &args.privileged {
        fields.push(quote!(privileged: #privileged,));
    }
    if let Some(writes) = &args.writes {
        fields.push(quote!(writes: ::core::option::Option::Some(&[#(#writes),*]),));
    }
    if let Some(bind) = &args.bind {
        fields.push(quote!(bind: &[#(#bind),*],));
    }
    if let Some(leaks) = &args.allow_leaks {
        fields.push(quote!(allow_leaks: &[#(#leaks),*],));
    }
    if let Some(rw) = &args.proc_sys_rw {
        let rw = rw.value() == "rw";
        fields.push(quote!(proc_sys_rw: #rw,));
    }
    if let Some(size) = &args.tmpfs_size {
        let size = some(size.to_token_stream());
        fields.push(quote!(tmpfs_size: #size,));
    }
    if let Some(max) = &args.pids_max {
        let max = some(max.to_token_stream());
        fields.push(quote!(pids_max: #max,));
    }
    // Nine optional fields; name, module_path, manifest_dir and hostname are always written.
    let rest = (fields.len() < 9).then(|| quote!(..::isotest::__private::Meta::DEFAULT));
    quote! {
        ::isotest::__private::Meta {
            name: #name,
            module_path: ::core::module_path!(),
            manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
            hostname: #hostname,
            #(#fields)*
            #rest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expansion of `#[isolated(args)] item`, or the error messages joined by newlines.
    fn expand(args: &str, item: &str) -> Result<String, String> {
        isolated(syn::parse_str(args), syn::parse_str(item))
            .map(|tokens| tokens.to_string())
            .map_err(|e| {
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    fn squash(tokens: &str) -> String {
        tokens.split_whitespace().collect()
    }

    #[test]
    fn plain_test() {
        let out = expand("", "fn t() { body(); }").unwrap();
        let expected = quote! {
            #[::core::prelude::v1::test]
            fn t() {
                ::isotest::__private::run(
                    &::isotest::__private::Meta {
                        name: "t",
                        module_path: ::core::module_path!(),
                        manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                        hostname: ::core::option::Option::None,
                        ..::isotest::__private::Meta::DEFAULT
                    },
                    move || { body(); }
                )
            }
        };
        assert_eq!(squash(&out), squash(&expected.to_string()));
    }

    #[test]
    fn arguments_become_meta_fields() {
        let out = expand(
            r#"hostname = "web1", timeout = "5s", privileged = true, writes = ["/etc/x"],
               bind = ["a:/b"], allow_leaks = ["mounts"], rootfs = "host", proc_sys = "rw",
               tmpfs_size = "64m", pids_max = 64"#,
            "fn t() {}",
        )
        .unwrap();
        let out = squash(&out);
        for field in [
            r#"hostname:::core::option::Option::Some("web1")"#,
            "timeout_ms:::core::option::Option::Some(5000u64)",
            "privileged:true",
            r#"writes:::core::option::Option::Some(&["/etc/x"])"#,
            r#"bind:&["a:/b"]"#,
            r#"allow_leaks:&["mounts"]"#,
            r#"rootfs:::core::option::Option::Some("host")"#,
            "proc_sys_rw:true",
            r#"tmpfs_size:::core::option::Option::Some("64m")"#,
            "pids_max:::core::option::Option::Some(64u64)",
        ] {
            assert!(out.contains(field), "{field} missing in {out}");
        }
        // Every field is set, so `..DEFAULT` would be a needless update.
        assert!(!out.contains("DEFAULT"), "{out}");
    }

    #[test]
    fn keeps_attributes_visibility_and_return_type() {
        let out = expand(
            "",
            r#"#[should_panic(expected = "boom")] pub(crate) fn t() -> Result<(), String> { Ok(()) }"#,
        )
        .unwrap();
        let out = squash(&out);
        assert!(out.starts_with(&squash(
            r#"#[::core::prelude::v1::test] #[should_panic(expected = "boom")] pub(crate) fn t() -> Result<(), String>"#
        )), "{out}");
        assert!(out.contains("move||->Result<(),String>{Ok(())}"), "{out}");
    }

    #[test]
    fn no_second_test_attribute() {
        let out = expand("", "#[test] fn t() {}").unwrap();
        assert_eq!(out.matches("test]").count(), 1, "{out}");
        // rstest has put `#[test]` above `#[isolated]` already; its trace is the empty `<>`.
        let out = expand("", "fn case_1<>() { let x = 1; t(x) }").unwrap();
        assert!(!out.contains("test]"), "{out}");
        assert!(squash(&out).starts_with("fncase_1()"), "{out}");
    }

    #[test]
    fn raw_identifiers_are_named_without_prefix() {
        assert!(expand("", "fn r#match() {}")
            .unwrap()
            .contains("name : \"match\""));
    }

    #[test]
    fn rejections() {
        assert!(expand("", "async fn t() {}")
            .unwrap_err()
            .contains("synchronous"));
        assert!(expand("", "fn t<T>() {}")
            .unwrap_err()
            .contains("cannot be generic"));
        assert!(expand("", "fn t<'a>() {}")
            .unwrap_err()
            .contains("cannot be generic"));
        assert!(expand("", "fn t(x: u32) {}")
            .unwrap_err()
            .contains("put #[isolated] after #[rstest]"));
        for second in [
            "#[test] #[test]",
            "#[tokio::test]",
            "#[test] #[async_std::test]",
        ] {
            let e = expand("", &format!("{second} fn t() {{}}")).unwrap_err();
            assert!(
                e.starts_with("second test attribute is supplied"),
                "{second}: {e}"
            );
        }
        let e = expand("", "#[rstest] fn t() {}").unwrap_err();
        assert!(e.contains("put #[isolated] after #[rstest]"), "{e}");
        assert!(expand("", "struct S;")
            .unwrap_err()
            .contains("goes on a test function"));
    }

    #[test]
    fn argument_and_function_errors_together() {
        let e = expand("nope = 1", "async fn t(x: u32) {}").unwrap_err();
        assert_eq!(e.lines().count(), 3, "{e}");
    }
}
