//! The loader never panics, whatever the input: arbitrary text, and valid configs with bytes
//! cut out or changed (the likely shapes of real mistakes).

use natfw_policy::config::load_str;
use proptest::prelude::*;

const CONFIG: &str = include_str!("../../examples/2-dmz-shared/natfw.yaml");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = load_str("f.yaml", &text);
    }

    #[test]
    fn yamlish_text_never_panics(text in "[a-z_:\\[\\]{},\\- \\n\"'&*!0-9./]{0,300}") {
        if let Err(d) = load_str("f.yaml", &text) {
            // Every problem has a position inside the text (or the file as a whole).
            let lines = text.lines().count().max(1) as u32 + 1;
            for x in &d.0 {
                prop_assert!(x.pos.line <= lines, "{x} beyond {lines} lines");
            }
        }
    }

    #[test]
    fn damaged_config_never_panics(start in 0usize..CONFIG.len(), len in 0usize..40, byte in 0u8..128) {
        let mut bytes = CONFIG.as_bytes().to_vec();
        let end = (start + len).min(bytes.len());
        bytes.drain(start..end);
        if start < bytes.len() && byte.is_ascii() {
            bytes[start] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_str("f.yaml", &text);
    }
}
