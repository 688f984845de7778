//! Finds non-finite floats in a value before it is stored as JSON.
//!
//! JSON has no NaN or infinity, and `serde_json` writes them as `null` without an
//! error, so `Some(f64::NAN)` would come back as `None` (or fail to decode). The
//! cache refuses such a value with `Error::Serialize` instead. This serializer only
//! walks the value; it runs only when the JSON output contains `null`, the one place
//! a non-finite float can hide, so ordinary values pay nothing.

use std::fmt;

use serde::Serialize;
use serde::ser;

/// Why a value cannot be stored as JSON.
#[derive(Debug)]
pub(crate) struct NotFinite(String);

impl fmt::Display for NotFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFinite {}

impl ser::Error for NotFinite {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NotFinite(msg.to_string())
    }
}

/// `Err` if `value` holds a NaN or an infinity anywhere.
pub(crate) fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), NotFinite> {
    value.serialize(Walk)
}

fn not_finite(v: f64) -> Result<(), NotFinite> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(NotFinite(format!(
            "{v} cannot be stored as JSON (it would read back as null); use \
             Format::MessagePack for non-finite floats"
        )))
    }
}

/// The walker: every scalar is fine except non-finite floats.
struct Walk;

macro_rules! fine {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<(), NotFinite> { Ok(()) })*
    };
}

impl ser::Serializer for Walk {
    type Ok = ();
    type Error = NotFinite;
    type SerializeSeq = Walk;
    type SerializeTuple = Walk;
    type SerializeTupleStruct = Walk;
    type SerializeTupleVariant = Walk;
    type SerializeMap = Walk;
    type SerializeStruct = Walk;
    type SerializeStructVariant = Walk;

    fine!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8], serialize_unit_struct: &'static str);

    fn serialize_f32(self, v: f32) -> Result<(), NotFinite> {
        not_finite(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), NotFinite> {
        not_finite(v)
    }
    fn serialize_none(self) -> Result<(), NotFinite> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), NotFinite> {
        v.serialize(Walk)
    }
    fn serialize_unit(self) -> Result<(), NotFinite> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), NotFinite> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), NotFinite> {
        v.serialize(Walk)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), NotFinite> {
        v.serialize(Walk)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_tuple(self, _: usize) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Walk, NotFinite> {
        Ok(Walk)
    }
}

/// Compound values: walk each element, key and field.
macro_rules! compound {
    ($($trait:ident { $($method:ident($($arg:ty),*)),* }),* $(,)?) => {$(
        impl ser::$trait for Walk {
            type Ok = ();
            type Error = NotFinite;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $(_: $arg,)* v: &T) -> Result<(), NotFinite> {
                v.serialize(Walk)
            })*
            fn end(self) -> Result<(), NotFinite> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq { serialize_element() },
    SerializeTuple { serialize_element() },
    SerializeTupleStruct { serialize_field() },
    SerializeTupleVariant { serialize_field() },
    SerializeStruct { serialize_field(&'static str) },
    SerializeStructVariant { serialize_field(&'static str) },
}

impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = NotFinite;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), NotFinite> {
        k.serialize(Walk)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NotFinite> {
        v.serialize(Walk)
    }
    fn end(self) -> Result<(), NotFinite> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn finds_non_finite_floats_anywhere() {
        assert!(check(&1.5f64).is_ok());
        assert!(check(&(1, "x", [0.5f32], None::<f64>)).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check(&bad).is_err());
            assert!(check(&Some(bad)).is_err());
            assert!(check(&vec![1.0, bad]).is_err());
            let map: BTreeMap<String, Vec<f64>> = [("k".to_string(), vec![bad])].into();
            assert!(check(&map).is_err());
        }
        assert!(check(&f32::NAN).is_err());
        #[derive(Serialize)]
        enum E {
            V { x: f64 },
        }
        assert!(check(&E::V { x: f64::NAN }).is_err());
        assert!(check(&E::V { x: 2.0 }).is_ok());
    }
}
