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
            TestKind::Cases => errors.push(syn::Error::new_spanned(
                attr,
                "a test attribute below #[isolated] would make a second test; put #[isolated] \
                 after it so that it applies to each generated case",
            )),
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
    // Six optional fields; name, module_path, manifest_dir and hostname are always written.
    let rest = (fields.len() < 6).then(|| quote!(..::isotest::__private::Meta::DEFAULT));
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
