//! The arguments of `#[isolated(...)]`: `name = literal` pairs, each checked here so that a
//! mistake is reported at compile time, spanned at the argument that holds it.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitInt, LitStr, Token};

use crate::validate;

/// Every argument name, in the order the docs and error messages list them.
const NAMES: &[&str] = &[
    "hostname",
    "rootfs",
    "timeout",
    "privileged",
    "writes",
    "bind",
    "allow_leaks",
    "proc_sys",
    "tmpfs_size",
    "pids_max",
];

/// The leak checks a test may opt out of.
const LEAKS: &[&str] = &["processes", "mounts"];

/// The parsed, checked arguments. `None` (or empty) means "not given": the runtime decides.
#[derive(Default)]
pub struct Args {
    pub hostname: Option<LitStr>,
    pub rootfs: Option<LitStr>,
    /// The timeout in milliseconds, with the span of its literal.
    pub timeout_ms: Option<(u64, Span)>,
    pub privileged: Option<LitBool>,
    pub writes: Option<Vec<LitStr>>,
    pub bind: Option<Vec<LitStr>>,
    pub allow_leaks: Option<Vec<LitStr>>,
    /// `proc_sys = "rw"` or `"ro"`.
    pub proc_sys_rw: Option<LitStr>,
    pub tmpfs_size: Option<LitStr>,
    /// `pids_max = N`, as a `u64` literal.
    pub pids_max: Option<LitInt>,
}

/// One `name = value` pair, not yet checked.
struct Arg {
    name: Ident,
    value: Expr,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        if !input.peek(Token![=]) {
            let example = example(&name.to_string()).unwrap_or("name = value");
            return Err(syn::Error::new(
                name.span(),
                format!("`{name}` needs a value: `{example}`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(Arg { name, value })
    }
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let list = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        let mut args = Args::default();
        let mut errors: Option<syn::Error> = None;
        for arg in list {
            if let Err(e) = args.set(arg) {
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

impl Args {
    /// Checks one argument and stores it; refuses a name it already holds.
    fn set(&mut self, Arg { name, value }: Arg) -> syn::Result<()> {
        let key = name.to_string();
        let duplicate = || {
            syn::Error::new(
                name.span(),
                format!("duplicate argument `{key}`; give each argument once"),
            )
        };
        match key.as_str() {
            "hostname" => {
                let lit = string(&key, &value)?;
                validate::hostname(&lit.value())
                    .map_err(|problem| syn::Error::new(lit.span(), problem))?;
                put(&mut self.hostname, lit).map_err(|_| duplicate())
            }
            "rootfs" => {
                let lit = string(&key, &value)?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "rootfs is empty; name a root filesystem, e.g. `rootfs = \"debian:bookworm\"`, \
                         or leave the argument out to use ISOTEST_ROOTFS or the default",
                    ));
                }
                put(&mut self.rootfs, lit).map_err(|_| duplicate())
            }
            "timeout" => {
                let lit = string(&key, &value)?;
                let d = validate::duration(&lit.value())
                    .map_err(|problem| syn::Error::new(lit.span(), problem))?;
                let ms = u64::try_from(d.as_millis()).map_err(|_| {
                    syn::Error::new(
                        lit.span(),
                        format!("timeout {:?} is too large", lit.value()),
                    )
                })?;
                put(&mut self.timeout_ms, (ms, lit.span())).map_err(|_| duplicate())
            }
            "privileged" => match &value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) => put(&mut self.privileged, b.clone()).map_err(|_| duplicate()),
                other => Err(wrong_kind(&key, other, "a bool literal")),
            },
            "writes" => {
                let paths = strings(&key, &value)?;
                for path in &paths {
                    if !path.value().starts_with('/') {
                        return Err(syn::Error::new(
                            path.span(),
                            format!(
                                "writes path {:?} is not absolute; list paths inside the sandbox, \
                                 e.g. \"/etc/myapp\"",
                                path.value()
                            ),
                        ));
                    }
                }
                put(&mut self.writes, paths).map_err(|_| duplicate())
            }
            "bind" => {
                let mounts = strings(&key, &value)?;
                for mount in &mounts {
                    bind_shape(&mount.value())
                        .map_err(|problem| syn::Error::new(mount.span(), problem))?;
                }
                put(&mut self.bind, mounts).map_err(|_| duplicate())
            }
            "allow_leaks" => {
                let leaks = strings(&key, &value)?;
                for leak in &leaks {
                    if !LEAKS.contains(&leak.value().as_str()) {
                        return Err(syn::Error::new(
                            leak.span(),
                            format!(
                                "unknown leak check {:?}; expected one of {}",
                                leak.value(),
                                quoted(LEAKS, "\"")
                            ),
                        ));
                    }
                }
                put(&mut self.allow_leaks, leaks).map_err(|_| duplicate())
            }
            "proc_sys" => {
                let lit = string(&key, &value)?;
                if !matches!(lit.value().as_str(), "rw" | "ro") {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "proc_sys {:?} is neither \"rw\" nor \"ro\"; `proc_sys = \"rw\"` \
                             leaves /proc/sys writable (as root, host-wide knobs too)",
                            lit.value()
                        ),
                    ));
                }
                put(&mut self.proc_sys_rw, lit).map_err(|_| duplicate())
            }
            "tmpfs_size" => {
                let lit = string(&key, &value)?;
                validate::tmpfs_size(&lit.value())
                    .map_err(|problem| syn::Error::new(lit.span(), problem))?;
                put(&mut self.tmpfs_size, lit).map_err(|_| duplicate())
            }
            "pids_max" => match &value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(n), ..
                }) => {
                    let max: u64 = n.base10_parse().map_err(|_| {
                        syn::Error::new(n.span(), "pids_max is too large for a u64")
                    })?;
                    if max == 0 {
                        return Err(syn::Error::new(
                            n.span(),
                            "pids_max is zero; the sandbox needs at least one process",
                        ));
                    }
                    let lit = LitInt::new(&format!("{max}u64"), n.span());
                    put(&mut self.pids_max, lit).map_err(|_| duplicate())
                }
                other => Err(wrong_kind(&key, other, "an integer literal")),
            },
            _ => Err(syn::Error::new(
                name.span(),
                format!(
                    "unknown argument `{key}`; expected one of {}",
                    quoted(NAMES, "`")
                ),
            )),
        }
    }
}

/// Stores `value` unless the slot is taken.
fn put<T>(slot: &mut Option<T>, value: T) -> Result<(), ()> {
    if slot.is_some() {
        return Err(());
    }
    *slot = Some(value);
    Ok(())
}

/// The value as a string literal, or an error naming the kind expected.
fn string(key: &str, value: &Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(wrong_kind(key, other, "a string literal")),
    }
}

/// The value as an array of string literals, or an error naming the kind expected.
fn strings(key: &str, value: &Expr) -> syn::Result<Vec<LitStr>> {
    match value {
        Expr::Array(array) => array
            .elems
            .iter()
            .map(|elem| match elem {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Ok(s.clone()),
                other => Err(wrong_kind(key, other, "string literals in the array")),
            })
            .collect(),
        other => Err(wrong_kind(key, other, "an array of string literals")),
    }
}

/// "`timeout` expects a string literal, found an integer literal: `timeout = "30s"`".
fn wrong_kind(key: &str, expr: &Expr, expected: &str) -> syn::Error {
    let example = example(key).unwrap_or_default();
    let found = match expr {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Str(_) => "a string literal",
            Lit::ByteStr(_) | Lit::CStr(_) => "a byte or C string literal",
            Lit::Byte(_) | Lit::Char(_) => "a character literal",
            Lit::Int(_) => "an integer literal",
            Lit::Float(_) => "a float literal",
            Lit::Bool(_) => "a bool literal",
            _ => "a literal of another kind",
        },
        Expr::Array(_) => "an array",
        _ => {
            return syn::Error::new_spanned(
                expr,
                format!(
                    "`{key}` expects {expected}, found an expression; arguments are checked at \
                     compile time, so write the value itself: `{example}`"
                ),
            )
        }
    };
    syn::Error::new_spanned(
        expr,
        format!("`{key}` expects {expected}, found {found}: `{example}`"),
    )
}

/// Checks a bind mount's shape: `SRC:DST`, `SRC:DST:ro` or `SRC:DST:rw`, with DST absolute.
pub fn bind_shape(mount: &str) -> Result<(), String> {
    crate::validate::bind(mount).map(|_| ())
}

/// How each argument is written, for error messages.
fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "hostname" => "hostname = \"web1\"",
        "rootfs" => "rootfs = \"debian:bookworm\"",
        "timeout" => "timeout = \"30s\"",
        "privileged" => "privileged = true",
        "writes" => "writes = [\"/etc/myapp\"]",
        "bind" => "bind = [\"fixtures/data:/data:ro\"]",
        "allow_leaks" => "allow_leaks = [\"processes\"]",
        "proc_sys" => "proc_sys = \"rw\"",
        "tmpfs_size" => "tmpfs_size = \"64m\"",
        "pids_max" => "pids_max = 256",
        _ => return None,
    })
}

/// `a`, `b`, `c` with the given quote.
fn quoted(names: &[&str], quote: &str) -> String {
    names
        .iter()
        .map(|n| format!("{quote}{n}{quote}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: &str) -> syn::Result<Args> {
        syn::parse_str(tokens)
    }

    fn error(tokens: &str) -> String {
        match parse(tokens) {
            Ok(_) => panic!("{tokens} accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn values(list: &Option<Vec<LitStr>>) -> Vec<String> {
        list.iter().flatten().map(LitStr::value).collect()
    }

    #[test]
    fn empty() {
        let args = parse("").unwrap();
        assert!(args.hostname.is_none() && args.timeout_ms.is_none() && args.writes.is_none());
    }

    #[test]
    fn every_argument() {
        let args = parse(
            r#"hostname = "web1", rootfs = "dir:/srv/root", timeout = "2m", privileged = true,
               writes = ["/etc/myapp"], bind = ["data:/data:ro", "/a:/b"],
               allow_leaks = ["mounts"],"#,
        )
        .unwrap();
        assert_eq!(args.hostname.unwrap().value(), "web1");
        assert_eq!(args.rootfs.unwrap().value(), "dir:/srv/root");
        assert_eq!(args.timeout_ms.unwrap().0, 120_000);
        assert!(args.privileged.unwrap().value);
        assert_eq!(values(&args.writes), ["/etc/myapp"]);
        assert_eq!(values(&args.bind), ["data:/data:ro", "/a:/b"]);
        assert_eq!(values(&args.allow_leaks), ["mounts"]);
    }

    #[test]
    fn empty_writes_is_declared() {
        assert_eq!(
            parse("writes = []").unwrap().writes.map(|w| w.len()),
            Some(0)
        );
    }

    #[test]
    fn timeouts_in_milliseconds() {
        assert_eq!(
            parse(r#"timeout = "250ms""#).unwrap().timeout_ms.unwrap().0,
            250
        );
        assert!(error(r#"timeout = "30""#).contains("no unit"));
        assert!(error(r#"timeout = "0s""#).contains("zero"));
        assert!(error(r#"timeout = "99999999999999999m""#).contains("too large"));
    }

    #[test]
    fn names_and_kinds() {
        assert_eq!(
            error(r#"hostnme = "web1""#),
            "unknown argument `hostnme`; expected one of `hostname`, `rootfs`, `timeout`, \
             `privileged`, `writes`, `bind`, `allow_leaks`, `proc_sys`, `tmpfs_size`, `pids_max`"
        );
        assert!(error(r#"rootfs = "a", rootfs = "b""#).starts_with("duplicate argument `rootfs`"));
        assert!(error("privileged").contains("`privileged = true`"));
        assert!(error("timeout = 30").contains("expects a string literal, found an integer"));
        assert!(error(r#"privileged = "true""#).contains("expects a bool literal"));
        assert!(error(r#"writes = "/etc""#).contains("expects an array of string literals"));
        assert!(error("writes = [ETC]").contains("found an expression"));
        assert!(error(r#"rootfs = """#).contains("rootfs is empty"));
    }

    #[test]
    fn every_mistake_is_reported() {
        let Err(e) = parse(r#"hostname = "a_b", nope = 1, timeout = "1h""#) else {
            panic!("accepted");
        };
        assert_eq!(e.into_iter().count(), 3);
    }

    #[test]
    fn hostnames_use_the_shared_check() {
        assert_eq!(
            error(r#"hostname = "web_1""#),
            validate::hostname("web_1").unwrap_err()
        );
    }

    #[test]
    fn writes_are_absolute() {
        assert!(error(r#"writes = ["/etc", "etc"]"#).contains("\"etc\" is not absolute"));
    }

    #[test]
    fn limits_and_proc_sys() {
        let args = parse(r#"proc_sys = "rw", tmpfs_size = "64m", pids_max = 64"#).unwrap();
        assert_eq!(args.proc_sys_rw.unwrap().value(), "rw");
        assert_eq!(args.tmpfs_size.unwrap().value(), "64m");
        assert_eq!(args.pids_max.unwrap().base10_parse::<u64>().unwrap(), 64);
        assert!(error(r#"proc_sys = "yes""#).contains("neither"));
        assert!(error(r#"tmpfs_size = "lots""#).contains("\"lots\""));
        assert!(error(r#"tmpfs_size = """#).contains("does not start with a number"));
        assert!(error("pids_max = 0").contains("zero"));
        assert!(error(r#"pids_max = "64""#).contains("expects an integer literal"));
    }

    #[test]
    fn leak_checks() {
        assert!(error(r#"allow_leaks = ["files"]"#).contains("unknown leak check \"files\""));
    }

    #[test]
    fn bind_shapes() {
        for good in ["data:/data", "data:/data:ro", "/src:/dst:rw", "a:/"] {
            assert_eq!(bind_shape(good), Ok(()), "{good}");
        }
        for (bad, problem) in [
            ("data", "is not SRC:DST"),
            ("a:b:c:d", "is not SRC:DST"),
            (":/data", "empty source"),
            ("data:data", "relative destination"),
            ("data:", "relative destination"),
            ("data:/data:rx", "mode \"rx\""),
        ] {
            let e = bind_shape(bad).unwrap_err();
            assert!(e.contains(problem), "{bad}: {e}");
        }
    }
}
