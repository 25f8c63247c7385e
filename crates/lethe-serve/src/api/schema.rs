//! The parts of the OpenAPI document the derives cannot say precisely: text that must not be
//! blank, a target's name (the configured targets, filled in when the router is built), a
//! time or date for `until`, and a hold's two shapes. Each is what the handlers check, so
//! that a request the document calls valid is never refused as malformed, and one it calls
//! invalid never accepted.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Ref, Schema,
    SchemaFormat, Type,
};
use utoipa::{PartialSchema, ToSchema};

/// A character that is not white space, as `str::trim` (Rust's `White_Space` property) sees
/// it, spelled out so that every regex engine reads the same set (`\s` differs between them).
pub const NOT_BLANK: &str =
    r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// Whether `s` has a character that is not white space: what [`NOT_BLANK`] matches.
pub fn not_blank(s: &str) -> bool {
    !s.trim().is_empty()
}

/// Text with at least one character that is not white space (a reason, a case, a subject).
pub struct Text;

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .pattern(Some(NOT_BLANK))
            .description(Some(
                "Text with at least one character that is not white space.",
            ))
            .into()
    }
}

impl ToSchema for Text {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Text")
    }
}

/// A configured target's name. The document a daemon serves lists its own targets
/// ([`target_names`]); this is the shape before it is filled in.
pub struct TargetName;

impl PartialSchema for TargetName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some("A target's name, as the config names it."))
            .into()
    }
}

impl ToSchema for TargetName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TargetName")
    }
}

/// The `TargetName` schema of a daemon whose config has these targets.
pub fn target_names(names: &[String]) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .description(Some(
            "A target's name: one of the targets of this daemon's config.",
        ));
    if !names.is_empty() {
        b = b.enum_values(Some(names.iter().cloned()));
    }
    b.into()
}

/// `until`: an RFC 3339 full date (kept through the end of that day, UTC) or date-time.
pub struct Until;

impl PartialSchema for Until {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .description(Some(
                "Until when: an RFC 3339 date (kept through the end of that day, UTC), e.g. 2025-01-31, or date-time, e.g. 2025-01-31T12:00:00Z; in the future, and within [exceptions] max_extension of the item's own expiry.",
            ))
            .into()
    }
}

impl ToSchema for Until {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Until")
    }
}

/// Whether `s` is written as [`Until`] says: `YYYY-MM-DD`, or
/// `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)` (`T` and `Z` in either case). Whether the date
/// and time exist is the parser's to say.
pub fn rfc3339_until(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let date = b.len() >= 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    if !date {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    if !(b.len() >= 20
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

fn text_ref() -> Ref {
    Ref::from_schema_name(Text::name())
}

fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

/// The schema of `HoldBody`: on a subject, or on a target (with `key`, one item of it); the
/// other side absent or null.
pub fn hold_body() -> RefOr<Schema> {
    let closed = || Some(AdditionalProperties::FreeForm(false));
    let case_and_reason = |b: ObjectBuilder| {
        b.property("case_id", RefOr::Ref(text_ref()))
            .property("reason", RefOr::Ref(text_ref()))
            .required("case_id")
            .required("reason")
    };
    let on_subject = case_and_reason(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("On a subject"))
            .description(Some("Every item of a data subject, now and later."))
            .property("subject", RefOr::Ref(text_ref()))
            .required("subject")
            .property("target", null())
            .property("key", null()),
    )
    .additional_properties(closed());
    let on_target = case_and_reason(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("On a target or one of its items"))
            .description(Some("All of a target, or with `key` one item of it."))
            .property(
                "target",
                RefOr::Ref(Ref::from_schema_name(TargetName::name())),
            )
            .required("target")
            .property(
                "key",
                AnyOfBuilder::new()
                    .item(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .description(Some("An item's key, as the target names it.")),
                    )
                    .item(null()),
            )
            .property("subject", null()),
    )
    .additional_properties(closed());
    OneOfBuilder::new()
        .item(on_subject)
        .item(on_target)
        .description(Some(
            "A legal hold: on a data subject, on a whole target, or on one item (`target` and `key`); `case_id` and `reason` are recorded with it.",
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_an_rfc3339_date_or_date_time() {
        for ok in [
            "2025-01-31",
            "2025-01-31T12:00:00Z",
            "2025-01-31t12:00:00z",
            "2025-01-31T12:00:00.123456789+05:30",
            "0001-01-01T00:00:00-23:59",
        ] {
            assert!(rfc3339_until(ok), "{ok}");
        }
        for bad in [
            "",
            "00",
            "1700000000",
            "2025-1-31",
            "2025-01-31 12:00:00Z",
            "2025-01-31T12:00Z",
            "2025-01-31T12:00:00",
            "2025-01-31T12:00:00.Z",
            "2025-01-31T12:00:00+0530",
            "2025-01-31T12:00:00+05",
            "x2025-01-31",
            "2025-01-31x",
            " 2025-01-31",
        ] {
            assert!(!rfc3339_until(bad), "{bad}");
        }
    }

    #[test]
    fn not_blank_is_what_trim_leaves() {
        for blank in ["", " ", "\t\n", "\u{3000}", "\u{85}\u{a0}\u{2028}"] {
            assert!(!not_blank(blank), "{blank:?}");
        }
        // Not white space to Rust, whatever some regex engines say of them.
        for text in ["x", " x ", "\u{1c}", "\u{200b}", "\u{feff}"] {
            assert!(not_blank(text), "{text:?}");
        }
    }
}
