//! Link settings. The `envoy_dynamic_module_callback_*` symbols are defined by the Envoy
//! binary that loads the module, so they are undefined at link time. A cdylib accepts that
//! by default; the unit-test executable (which never calls them) needs the linker told.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--unresolved-symbols=ignore-in-object-files");
    println!("cargo:rerun-if-changed=build.rs");
}
