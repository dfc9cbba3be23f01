//! The typed content index: what Ferry creates when a connector's index does not exist yet, and
//! how the fields agents describe (`DocumentSchema`) become its mapping.
//!
//! Contracts:
//! - [`content_index_body`] is Elastic's connector content index (the settings, analysis and
//!   dynamic template Elastic's connectors / Kibana give a new search index, language `en`),
//!   plus Ferry's fields (`_ferry_sync_generation`, `_ferry_original`) and
//!   `_meta.ferry.typed: true`. Only an index carrying that mark is ever given field mappings; an
//!   index the user created is left exactly as it is.
//! - [`field_mapping`] is the type table (README "Typed content indices"): integers →
//!   `integer`/`long`; `numeric(p,0)` with p ≤ 18 → `long`; `numeric(p,s)` with p ≤ 15 → `double`
//!   (15 significant digits survive a double); any other numeric → `double` plus an `exact`
//!   `keyword` sub-field holding every digit as sent (exact match, terms aggregation); floats →
//!   `double`; text → `text` with Elastic's analyzers and sub-fields (`enum` keyword ...); dates and
//!   timestamps → `date` (`strict_date_optional_time||epoch_millis`, millisecond precision);
//!   keywords → `keyword` (`ignore_above` 2048 so no value is rejected); json/jsonb →
//!   `flattened` on Elasticsearch, `flat_object` on OpenSearch (any shape in any row); bytea →
//!   `binary`; inet → `ip`.
//! - [`additions`] never changes a field that is already mapped: a field mapped with another
//!   type is returned as a conflict (the fix is to re-create the index), the rest is added.

use ferry_sdk::{FieldKind, FieldSpec};
use serde_json::{json, Map, Value};

use super::index::GENERATION_FIELD;
use super::version::Distribution;

/// Where the PostgreSQL source keeps the original text of values it sent as null.
pub const ORIGINAL_FIELD: &str = "_ferry_original";

/// Keyword values longer than this are kept in `_source` but not indexed (never rejected).
pub const KEYWORD_IGNORE_ABOVE: u32 = 2048;

/// The date format every `date` field gets: what agents send for dates and timestamps.
pub const DATE_FORMAT: &str = "strict_date_optional_time||epoch_millis";

/// The mapping type for JSON of any shape on this distribution.
pub fn json_type(d: Distribution) -> &'static str {
    match d {
        Distribution::Elasticsearch => "flattened",
        Distribution::OpenSearch => "flat_object",
    }
}

/// Elastic's `TEXT_FIELD_MAPPING` (connectors `es/settings.py`): text analyzed for relevance
/// tuning, with `enum` as the exact keyword.
pub fn text_mapping() -> Value {
    json!({
        "type": "text",
        "analyzer": "iq_text_base",
        "index_options": "freqs",
        "fields": {
            "stem": { "type": "text", "analyzer": "iq_text_stem" },
            "prefix": { "type": "text", "analyzer": "i_prefix", "search_analyzer": "q_prefix", "index_options": "docs" },
            "delimiter": { "type": "text", "analyzer": "iq_text_delimiter", "index_options": "freqs" },
            "joined": { "type": "text", "analyzer": "i_text_bigram", "search_analyzer": "q_text_bigram", "index_options": "freqs" },
            "enum": { "type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE }
        }
    })
}

/// Elastic's default content index analysis for English (`Settings(language_code="en")`,
/// without ICU).
fn analysis_settings() -> Value {
    let tokenizer = "standard";
    let folding = json!(["cjk_width", "lowercase", "asciifolding"]);
    let f = |extra: &[&str]| -> Value {
        let mut v: Vec<Value> = folding.as_array().cloned().unwrap_or_default();
        v.extend(extra.iter().map(|s| json!(s)));
        Value::Array(v)
    };
    json!({
        "analysis": {
            "analyzer": {
                "i_prefix": { "tokenizer": tokenizer, "filter": f(&["front_ngram"]) },
                "q_prefix": { "tokenizer": tokenizer, "filter": f(&[]) },
                "iq_text_base": { "tokenizer": tokenizer, "filter": f(&["en-stop-words-filter"]) },
                "iq_text_stem": { "tokenizer": tokenizer, "filter": f(&["en-stop-words-filter", "en-stem-filter"]) },
                "iq_text_delimiter": {
                    "tokenizer": "whitespace",
                    "filter": ["delimiter", "cjk_width", "lowercase", "asciifolding", "en-stop-words-filter", "en-stem-filter"]
                },
                "i_text_bigram": { "tokenizer": tokenizer, "filter": f(&["en-stem-filter", "bigram_joiner", "bigram_max_size"]) },
                "q_text_bigram": { "tokenizer": tokenizer, "filter": f(&["en-stem-filter", "bigram_joiner_unigrams", "bigram_max_size"]) }
            },
            "filter": {
                "front_ngram": { "type": "edge_ngram", "min_gram": 1, "max_gram": 12 },
                "delimiter": {
                    "type": "word_delimiter_graph", "generate_word_parts": "true", "generate_number_parts": "true",
                    "catenate_words": "true", "catenate_numbers": "true", "catenate_all": "true",
                    "preserve_original": "false", "split_on_case_change": "true", "split_on_numerics": "true",
                    "stem_english_possessive": "true"
                },
                "bigram_joiner": { "type": "shingle", "token_separator": "", "max_shingle_size": 2, "output_unigrams": "false" },
                "bigram_joiner_unigrams": { "type": "shingle", "token_separator": "", "max_shingle_size": 2, "output_unigrams": "true" },
                "bigram_max_size": { "type": "length", "min": 0, "max": 16 },
                "en-stem-filter": { "type": "stemmer", "name": "light_english" },
                "en-stop-words-filter": { "type": "stop", "stopwords": "_english_" }
            }
        },
        "index": { "similarity": { "default": { "type": "BM25" } } }
    })
}

/// The body of `PUT /<index>` for a content index Ferry creates.
pub fn content_index_body(d: Distribution) -> Value {
    json!({
        "settings": analysis_settings(),
        "mappings": {
            "_meta": { "ferry": { "typed": true, "json_type": json_type(d) } },
            "dynamic": "true",
            "dynamic_templates": [ { "data": { "match_mapping_type": "string", "mapping": text_mapping() } } ],
            "properties": {
                "id": { "type": "keyword" },
                "_timestamp": { "type": "date" },
                GENERATION_FIELD: { "type": "long" },
                // Original texts are strings: the dynamic template maps them as text.
                ORIGINAL_FIELD: { "type": "object", "dynamic": true }
            }
        }
    })
}

/// The mapping of one described field; `json_type` from the index's `_meta.ferry.json_type`.
pub fn field_mapping(f: &FieldSpec, json_type: &str) -> Value {
    match f.kind {
        FieldKind::Integer => json!({ "type": "integer" }),
        FieldKind::Long => json!({ "type": "long" }),
        FieldKind::Double => json!({ "type": "double" }),
        FieldKind::Decimal { precision, scale } => {
            if scale == 0 && (1..=18).contains(&precision) {
                json!({ "type": "long" })
            } else if (1..=15).contains(&precision) {
                json!({ "type": "double" })
            } else {
                json!({ "type": "double", "fields": { "exact": { "type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE } } })
            }
        }
        FieldKind::Boolean => json!({ "type": "boolean" }),
        FieldKind::Date => json!({ "type": "date", "format": DATE_FORMAT }),
        FieldKind::Keyword => json!({ "type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE }),
        FieldKind::Text => text_mapping(),
        FieldKind::Object if json_type == "flattened" => {
            json!({ "type": "flattened", "ignore_above": 8191, "depth_limit": 100 })
        }
        FieldKind::Object => json!({ "type": json_type }),
        FieldKind::Binary => json!({ "type": "binary" }),
        FieldKind::Ip => json!({ "type": "ip" }),
    }
}

/// What Ferry may do with an index, read from its mapping (`GET /<index>/_mapping`, one index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedIndex {
    /// `_meta.ferry.json_type`.
    pub json_type: String,
    /// `properties` as mapped now.
    pub properties: Map<String, Value>,
}

impl TypedIndex {
    /// `None` when the index is not one Ferry created typed.
    pub fn from_mapping(mappings: &Value) -> Option<TypedIndex> {
        let ferry = &mappings["_meta"]["ferry"];
        if ferry["typed"] != json!(true) {
            return None;
        }
        Some(TypedIndex {
            json_type: ferry["json_type"].as_str().unwrap_or("flattened").to_owned(),
            properties: mappings["properties"].as_object().cloned().unwrap_or_default(),
        })
    }
}

/// A described field whose existing mapping has another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub field: String,
    pub mapped: String,
    pub wanted: String,
    pub source_type: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {:?} is mapped as {} but the source's type is now {} ({}): re-create the index \
             (delete it and run a full sync) to apply the new type; until then its values may be rejected",
            self.field, self.mapped, self.wanted, self.source_type
        )
    }
}

/// The properties to add for `fields` (those not mapped yet), and the fields mapped otherwise.
pub fn additions(index: &TypedIndex, fields: &[FieldSpec]) -> (Map<String, Value>, Vec<Conflict>) {
    let mut add = Map::new();
    let mut conflicts = Vec::new();
    for f in fields {
        let wanted = field_mapping(f, &index.json_type);
        match index.properties.get(&f.name) {
            None => {
                add.insert(f.name.clone(), wanted);
            }
            Some(existing) => {
                let mapped = existing["type"].as_str().unwrap_or("object");
                let want = wanted["type"].as_str().unwrap_or("object");
                if mapped != want {
                    conflicts.push(Conflict {
                        field: f.name.clone(),
                        mapped: mapped.to_owned(),
                        wanted: want.to_owned(),
                        source_type: f.source_type.clone(),
                    });
                }
            }
        }
    }
    (add, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: FieldKind) -> FieldSpec {
        FieldSpec { name: "f".into(), kind, array: false, source_type: "t".into() }
    }

    #[test]
    fn numeric_rules() {
        let t = |p, s| field_mapping(&spec(FieldKind::Decimal { precision: p, scale: s }), "flattened");
        assert_eq!(t(18, 0), json!({"type": "long"}));
        assert_eq!(t(10, 0), json!({"type": "long"}));
        assert_eq!(t(12, 4), json!({"type": "double"}));
        assert_eq!(t(15, 2), json!({"type": "double"}));
        assert_eq!(t(19, 0)["fields"]["exact"]["type"], json!("keyword"));
        assert_eq!(t(38, 10)["type"], json!("double"));
        assert_eq!(t(38, 10)["fields"]["exact"]["type"], json!("keyword"));
        assert_eq!(t(0, 0)["fields"]["exact"]["type"], json!("keyword"), "unconstrained numeric");
        assert_eq!(field_mapping(&spec(FieldKind::Long), "x"), json!({"type": "long"}));
        assert_eq!(field_mapping(&spec(FieldKind::Double), "x"), json!({"type": "double"}));
    }

    #[test]
    fn other_kinds() {
        assert_eq!(
            field_mapping(&spec(FieldKind::Date), "x"),
            json!({"type": "date", "format": DATE_FORMAT})
        );
        assert_eq!(field_mapping(&spec(FieldKind::Text), "x"), text_mapping());
        assert_eq!(field_mapping(&spec(FieldKind::Object), "flat_object"), json!({"type": "flat_object"}));
        assert_eq!(field_mapping(&spec(FieldKind::Object), "flattened")["type"], json!("flattened"));
        assert_eq!(field_mapping(&spec(FieldKind::Keyword), "x")["type"], json!("keyword"));
        assert_eq!(field_mapping(&spec(FieldKind::Ip), "x"), json!({"type": "ip"}));
        assert_eq!(field_mapping(&spec(FieldKind::Binary), "x"), json!({"type": "binary"}));
    }

    #[test]
    fn only_indices_marked_typed_are_mapped_and_mapped_fields_never_change() {
        let body = content_index_body(Distribution::OpenSearch);
        let idx = TypedIndex::from_mapping(&body["mappings"]).unwrap();
        assert_eq!(idx.json_type, "flat_object");
        assert!(TypedIndex::from_mapping(&json!({"properties": {}})).is_none());
        let mut idx = idx;
        idx.properties.insert("a".into(), json!({"type": "long"}));
        let fields = vec![
            FieldSpec {
                name: "a".into(),
                kind: FieldKind::Double,
                array: false,
                source_type: "double precision".into(),
            },
            FieldSpec {
                name: "b".into(),
                kind: FieldKind::Boolean,
                array: false,
                source_type: "boolean".into(),
            },
        ];
        let (add, conflicts) = additions(&idx, &fields);
        assert_eq!(Value::Object(add), json!({"b": {"type": "boolean"}}));
        assert_eq!(conflicts.len(), 1);
        assert!(conflicts[0].to_string().contains("re-create the index"), "{}", conflicts[0]);
    }
}
