//! Embeds libtorch's library directory as an rpath, so `anodet` runs without LD_LIBRARY_PATH.
fn main() {
    // torch-sys (a direct dependency for this reason) exports where it found libtorch.
    if let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        println!("cargo:rustc-env=ANODET_LIBTORCH_LIB={lib_dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
