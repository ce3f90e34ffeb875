//! The record schema as a writer other than Gridlink must produce it, and the Chinese words for
//! what is wrong when a document does not follow it.
//!
//! A record document is read through Automerge's JSON view, so a field's *name* and *JSON type*
//! decide whether it reads. Three rules beyond the field list in [`crate::record`]:
//! - **Integers.** Fields meant as integers (`at_ms`, `at_c`, `created_at_ms`, `schema`,
//!   deadlines, `satisfaction`, photo times) may be written as Automerge `int`, `uint`, or a
//!   `f64` that holds a whole number: Automerge's JavaScript library writes `0` inside a nested
//!   object literal as a float, and that is read as the integer 0. A fractional value (`0.5`) in
//!   an integer field is refused, naming the field.
//! - **Text or string.** Free text — `title`, `description`, `address`, `notes` of the record and
//!   `note` of a timeline entry — is an Automerge text object, so that concurrent edits merge
//!   character by character. Every other string (codes, ids, names, roles, action types) is a
//!   plain string scalar (`ImmutableString` in Automerge's JavaScript library, whose plain JS
//!   strings become text objects). The server refuses a change that writes the other form, so
//!   readers never meet both.
//! - **Errors.** A document that does not read is refused with the record and the field named in
//!   Chinese (`记录 … 的结构不符合要求:字段“办理记录 0190… › 时间序号”类型不对,应为整数`);
//!   values are never echoed, so personal data in a malformed field never reaches a message.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Turns every float that holds a whole number (within ±2^53, where `f64` is exact) into an
/// integer, everywhere in the value. Fields meant as floats (`lat`, `lon`) read integers too.
pub fn normalise_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= 9_007_199_254_740_992.0
            {
                // The range check above makes the cast exact.
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_numbers),
        Value::Object(map) => map.values_mut().for_each(normalise_numbers),
        _ => {}
    }
}

/// Reads `T` from `value` (found at `prefix` in the document); on failure, says in Chinese which
/// field is wrong and how.
pub fn typed<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = if prefix.is_empty() { Vec::new() } else { vec![prefix.to_owned()] };
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Map { key } => path.push(key.clone()),
                serde_path_to_error::Segment::Seq { index } => path.push(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => path.push(variant.clone()),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        describe(&path, &e.into_inner().to_string())
    })
}

/// Whether the field at `path` (keys from the document's root) is free text.
pub fn is_text_field(path: &[String]) -> bool {
    match path {
        [key] => matches!(key.as_str(), "title" | "description" | "address" | "notes"),
        [timeline, _, note] => timeline == "timeline" && note == "note",
        _ => false,
    }
}

/// The Chinese name of a field path, e.g. `字段“办理记录 01900000… › 时间序号”`.
pub fn field_label(path: &[String]) -> String {
    let mut parts = Vec::new();
    let mut iter = path.iter().peekable();
    while let Some(key) = iter.next() {
        if key == "timeline"
            && let Some(entry) = iter.next()
        {
            let short: String = entry.chars().take(8).collect();
            let more = if entry.chars().count() > 8 { "…" } else { "" };
            parts.push(format!("办理记录 {short}{more}"));
            continue;
        }
        match key.parse::<usize>() {
            Ok(i) => parts.push(format!("第{}项", i + 1)),
            Err(_) => parts.push(key_label(key)),
        }
    }
    if parts.is_empty() { "记录".to_owned() } else { format!("字段“{}”", parts.join(" › ")) }
}

fn key_label(key: &str) -> String {
    let label = match key {
        "kind" => "记录类型",
        "schema" => "数据版本",
        "id" => "记录编号",
        "provisional_no" => "临时编号",
        "case_no" => "案卷编号",
        "created_at_ms" => "创建时间",
        "category" => "事件类别",
        "title" => "标题",
        "description" => "描述",
        "grid" => "所在网格",
        "address" => "地址",
        "lat" => "纬度",
        "lon" => "经度",
        "urgency" => "紧急程度",
        "parties" => "当事人",
        "photos" => "照片",
        "notes" => "备注",
        "item" => "服务事项",
        "mode" => "办理方式",
        "station" => "服务站",
        "resident" => "服务对象",
        "name" => "姓名",
        "phone" => "电话",
        "id_number" => "身份证号",
        "materials" => "材料清单",
        "timeline" => "办理记录",
        "at_ms" => "时间",
        "at_c" => "时间序号",
        "actor" => "操作人",
        "actor_name" => "操作人姓名",
        "role" => "角色",
        "unit" => "所在单位",
        "action" => "操作",
        "type" => "类型",
        "note" => "说明",
        "to_unit" => "目标单位",
        "to_units" => "督办对象",
        "deadline_ms" => "办理期限",
        "until_ms" => "延期至",
        "satisfaction" => "满意度",
        "overdue" => "超期督办",
        "missing" => "缺少的材料",
        "supplied" => "补交的材料",
        "batch_id" => "批次",
        "media_url" => "照片链接",
        other => return other.chars().take(40).collect(),
    };
    label.to_owned()
}

/// A serde error message turned into Chinese for the field at `path`. The value itself is never
/// repeated (it may be personal data); a variant name is, shortened, since it is a code.
fn describe(path: &[String], message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let mut full = path.to_vec();
        full.push(key.to_owned());
        return format!("缺少{}", field_label(&full));
    }
    let field = field_label(path);
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let name: String = rest.split('`').next().unwrap_or_default().chars().take(40).collect();
        return if let [.., action, kind] = path
            && action == "action"
            && kind == "type"
        {
            format!("{}:未知的操作类型“{name}”", field_label(&path[..path.len() - 1]))
        } else if path.last().is_some_and(|k| k == "action") {
            format!("{field}:未知的操作类型“{name}”")
        } else {
            format!("{field}:无法识别的取值“{name}”")
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("{field}类型不对,应为{},实际是{}", kind_name(expected), kind_name(got));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        return format!("{field}的值不符合要求,应为{}", kind_name(expected));
    }
    if message.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
        // Our own messages (e.g. a unit code that does not parse) are already in Chinese.
        return format!("{field}:{message}");
    }
    format!("{field}格式不正确")
}

/// The Chinese name of a serde type description ("u32", "a string", "floating point `0.5`").
fn kind_name(serde_kind: &str) -> &'static str {
    let k = serde_kind.trim();
    if k.starts_with("floating point") {
        "小数"
    } else if k.starts_with("integer")
        || k.starts_with('u') && k[1..].parse::<u8>().is_ok()
        || k.starts_with('i') && k[1..].parse::<u8>().is_ok()
    {
        "整数"
    } else if k == "f64" || k == "f32" {
        "数字"
    } else if k.starts_with("string") || k.contains("a string") || k.contains("borrowed string") || k == "char" {
        "字符串"
    } else if k.starts_with("boolean") || k.contains("a boolean") {
        "是或否(布尔值)"
    } else if k == "map" || k.starts_with("struct") || k.contains("a map") || k.contains("enum") {
        "对象"
    } else if k == "sequence" || k.contains("a sequence") {
        "列表"
    } else if k == "null" || k.contains("unit") || k.contains("option") {
        "空值"
    } else {
        "规定的格式"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn whole_floats_become_integers_and_fractions_stay() {
        let mut v = serde_json::json!({"a": 0.0, "b": [3.0, 2.5], "c": {"d": -7.0, "lat": 25.04}, "e": 1e300});
        normalise_numbers(&mut v);
        assert_eq!(v, serde_json::json!({"a": 0, "b": [3, 2.5], "c": {"d": -7, "lat": 25.04}, "e": 1e300}));
    }

    #[test]
    fn errors_name_the_field_in_chinese_without_the_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Entry {
            at_c: u32,
            action: crate::workflow::Action,
        }
        type Timeline = std::collections::BTreeMap<String, Entry>;
        let bad = serde_json::json!({"0190abcdef12": {"at_c": {"x": 1}, "action": {"type": "close"}}});
        let e = typed::<Timeline>(&bad, "timeline").unwrap_err();
        assert_eq!(e, "字段“办理记录 0190abcd… › 时间序号”类型不对,应为整数,实际是对象");
        let bad = serde_json::json!({"0190abcdef12": {"at_c": 1, "action": {"type": "teleport"}}});
        let e = typed::<Timeline>(&bad, "timeline").unwrap_err();
        assert_eq!(e, "字段“办理记录 0190abcd… › 操作”:未知的操作类型“teleport”");
        let e = typed::<Entry>(&serde_json::json!({"action": {"type": "close"}}), "").unwrap_err();
        assert_eq!(e, "缺少字段“时间序号”");
        let e = typed::<Entry>(&serde_json::json!({"at_c": "13800138000", "action": {"type": "close"}}), "").unwrap_err();
        assert!(!e.contains("13800138000"), "{e}");
        assert!(!e.is_ascii(), "{e}");
    }

    #[test]
    fn text_fields_are_the_free_text_ones() {
        assert!(is_text_field(&path(&["title"])));
        assert!(is_text_field(&path(&["timeline", "x", "note"])));
        assert!(!is_text_field(&path(&["timeline", "x", "actor"])));
        assert!(!is_text_field(&path(&["resident", "name"])));
        assert!(!is_text_field(&path(&["parties", "0", "name"])));
    }
}
