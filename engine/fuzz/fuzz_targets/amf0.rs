//! `rml_amf0` (strom parses every RTMP command and data message through it): `deserialize` never
//! panics, and whatever deserializes and re-serializes deserializes back to the same values.
//!
//! Numbers are compared by their bits (NaN payloads survive a round trip; `==` on `f64` would call
//! NaN unequal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_amf0::Amf0Value;

fn same(a: &Amf0Value, b: &Amf0Value) -> bool {
    match (a, b) {
        (Amf0Value::Number(x), Amf0Value::Number(y)) => x.to_bits() == y.to_bits(),
        (Amf0Value::Boolean(x), Amf0Value::Boolean(y)) => x == y,
        (Amf0Value::Utf8String(x), Amf0Value::Utf8String(y)) => x == y,
        (Amf0Value::Null, Amf0Value::Null) | (Amf0Value::Undefined, Amf0Value::Undefined) => true,
        (Amf0Value::Object(x), Amf0Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Amf0Value::StrictArray(x), Amf0Value::StrictArray(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let values = match rml_amf0::deserialize(&mut &data[..]) {
        Ok(v) => v,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let Ok(bytes) = rml_amf0::serialize(&values) else {
        return; // a string over 64 KiB: not representable, serialize refuses it
    };
    let again = match rml_amf0::deserialize(&mut &bytes[..]) {
        Ok(v) => v,
        Err(e) => panic!("re-serialized values do not deserialize: {e:?}\nvalues: {values:?}"),
    };
    assert!(
        values.len() == again.len() && values.iter().zip(&again).all(|(a, b)| same(a, b)),
        "round trip changed the values:\nfirst:  {values:?}\nsecond: {again:?}"
    );
});
