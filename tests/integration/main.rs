//! Integration tests: one binary, one module per area.

mod cli;
mod command;

#[test]
fn smoke() {
    isotest::__private::run(
        &isotest::__private::Meta {
            name: "smoke",
            module_path: module_path!(),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
            ..isotest::__private::Meta::DEFAULT
        },
        || {
            println!("hello from inside pid={}", std::process::id());
            println!(
                "{}",
                std::fs::read_to_string("/proc/self/mountinfo").unwrap()
            );
            println!("{}", std::fs::read_to_string("/etc/os-release").unwrap());
            assert_eq!(std::process::id(), 1);
        },
    )
}
