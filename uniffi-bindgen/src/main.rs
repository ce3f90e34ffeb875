//! The uniffi bindings generator of this workspace (`cargo xtask bindings` runs it).
fn main() {
    uniffi::uniffi_bindgen_main()
}
