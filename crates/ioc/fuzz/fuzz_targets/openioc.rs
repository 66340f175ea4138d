//! Fuzz the OpenIOC reader: any input must give an indicator or an error, never a
//! panic. For an indicator that loads, check the sweep's pre-filter on the way: a file
//! that `FileNecessity` does not admit (by size and name, digests or path tests) must
//! evaluate to false.
#![no_main]
use libfuzzer_sys::fuzz_target;
use riposte_ioc::eval::{evaluate, evaluate_host, FileNecessity, Item};
use riposte_ioc::model::{Field, FieldValue, ItemType};
use riposte_ioc::Truth;
use std::borrow::Cow;

/// A file whose size, name and digests no necessary set contains.
struct Outsider;

const MD5: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";
const SHA1: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";
const SHA256: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";

impl Item for Outsider {
    fn item_type(&self) -> ItemType {
        ItemType::File
    }
    fn value(&mut self, field: Field) -> Option<Cow<'_, FieldValue>> {
        Some(Cow::Owned(match field {
            Field::FileSize => FieldValue::Int(987_654_321),
            Field::FileName => FieldValue::Str("riposte-fuzz-outsider".into()),
            Field::FileFullPath => FieldValue::Str("/riposte-fuzz-outsider".into()),
            Field::FileMd5 => FieldValue::Str(MD5.into()),
            Field::FileSha1 => FieldValue::Str(SHA1.into()),
            Field::FileSha256 => FieldValue::Str(SHA256.into()),
            _ => return None,
        }))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ioc) = riposte_ioc::openioc::parse_bytes(data, "fuzz") {
        let _ = evaluate_host(&ioc, &|_| Truth::Unknown);
        let need = FileNecessity::of(&ioc);
        if !need.admits(987_654_321, || "riposte-fuzz-outsider".into())
            || !need.admits_digests([MD5, SHA1, SHA256])
            || !need.admits_texts(|f| match f {
                Field::FileFullPath => Some("/riposte-fuzz-outsider"),
                Field::FileName => Some("riposte-fuzz-outsider"),
                _ => None,
            })
        {
            for other in [Truth::True, Truth::Unknown, Truth::False] {
                assert_eq!(evaluate(&ioc, &mut Outsider, &|_| other).truth, Truth::False);
            }
        }
    }
});
