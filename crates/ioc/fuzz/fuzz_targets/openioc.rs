//! Fuzz the OpenIOC reader: any input must give an indicator or an error, never a
//! panic. For an indicator that loads, check the sweep's pre-filter on the way: a file
//! that `FileNecessity` does not admit must evaluate to false.
#![no_main]
use libfuzzer_sys::fuzz_target;
use riposte_ioc::eval::{evaluate, evaluate_host, FileNecessity, Item};
use riposte_ioc::model::{Field, FieldValue, ItemType};
use riposte_ioc::Truth;
use std::borrow::Cow;

/// A file whose size and name no necessary set contains.
struct Outsider;

impl Item for Outsider {
    fn item_type(&self) -> ItemType {
        ItemType::File
    }
    fn value(&mut self, field: Field) -> Option<Cow<'_, FieldValue>> {
        Some(Cow::Owned(match field {
            Field::FileSize => FieldValue::Int(987_654_321),
            Field::FileName => FieldValue::Str("riposte-fuzz-outsider".into()),
            Field::FileFullPath => FieldValue::Str("/riposte-fuzz-outsider".into()),
            _ => return None,
        }))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ioc) = riposte_ioc::openioc::parse_bytes(data, "fuzz") {
        let _ = evaluate_host(&ioc, &|_| Truth::Unknown);
        let need = FileNecessity::of(&ioc);
        if !need.admits(987_654_321, || "riposte-fuzz-outsider".into()) {
            for other in [Truth::True, Truth::Unknown, Truth::False] {
                assert_eq!(evaluate(&ioc, &mut Outsider, &|_| other).truth, Truth::False);
            }
        }
    }
});
