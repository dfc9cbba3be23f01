//! The content index a connector syncs into, and how a full sync removes vanished documents.
//!
//! # Deleting what vanished from the source, without remembering ids
//!
//! Every document written by a full sync carries that sync's generation in
//! [`GENERATION_FIELD`] (spliced in by the bulk path, see [`generation_fragment`]). When the full
//! sync has written everything, any document still lacking the current generation was not seen
//! in the source this time: it vanished, and [`delete_stale`] has Elasticsearch delete it with one
//! `_delete_by_query`. The control plane's memory therefore does not grow with the index. (Elastic's
//! connector service loads every `_id` of the index into RAM for this — about 5 GB for 100M
//! documents.) Documents written concurrently by an incremental sync are safe as long as they
//! carry the current generation too; `conflicts=proceed` makes a document changed during the
//! deletion be skipped rather than deleted.

use serde_json::json;

use super::client::EsClient;
use super::error::EsError;

/// The field holding the generation of the full sync that last wrote a document.
pub const GENERATION_FIELD: &str = "_ferry_sync_generation";

/// The pre-rendered JSON fragment (`"_ferry_sync_generation":1234`) for
/// [`super::bulk::BulkIndexer::index_batch`]'s `extra_fields`.
pub fn generation_fragment(generation: i64) -> Vec<u8> {
    format!("\"{GENERATION_FIELD}\":{generation}").into_bytes()
}

/// Elastic's per-document pipeline flags (`_extract_binary_content`,
/// `_reduce_whitespace`, `_run_ml_inference`), from the job's `pipeline`
/// settings, as Elastic's `SyncJobRunner.prepare_docs` sets them on every
/// document: `search-default-ingestion` (and pipelines copied from it) read
/// them to decide what to run and then remove them. Only spliced when the
/// job's bulks name a pipeline — without one nothing would remove them.
pub fn pipeline_fragment(settings: &serde_json::Value) -> Vec<u8> {
    let flag = |k: &str| settings.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    format!(
        "\"_extract_binary_content\":{},\"_reduce_whitespace\":{},\"_run_ml_inference\":{}",
        flag("extract_binary_content"),
        flag("reduce_whitespace"),
        flag("run_ml_inference")
    )
    .into_bytes()
}

fn generation_mapping() -> serde_json::Value {
    json!({ "properties": { GENERATION_FIELD: { "type": "long" } } })
}

/// Makes sure `index` exists and maps [`GENERATION_FIELD`] as `long`.
///
/// A missing index is created as a typed content index ([`super::mapping::content_index_body`]:
/// Elastic's content index settings and dynamic template, `_meta.ferry.typed`); the fields agents
/// describe are mapped later, as their `DocumentSchema` arrives. An existing one — possibly pre-created by the user with their own mappings, analyzers, even
/// `"dynamic": "strict"` — keeps everything it has: we only add our field with `_mapping`, which
/// is additive. Fails if the index already maps the field with another type.
pub async fn ensure_index(client: &EsClient, index: &str) -> Result<(), EsError> {
    if !client.index_exists(index).await? {
        // Another control plane may create it between the check and here: `create_index`
        // treats "already exists" as success.
        let version = super::version::handshake(client).await?;
        client.create_index(index, &super::mapping::content_index_body(version.distribution)).await?;
    }
    client.put_mapping(index, &generation_mapping()).await
}

/// Deletes every document of `index` whose [`GENERATION_FIELD`] is not `generation` (including
/// documents without the field) and returns how many were deleted. Refreshes first, so the
/// sync's last writes are visible to the query, and after, so counts reflect the deletion.
pub async fn delete_stale(client: &EsClient, index: &str, generation: i64) -> Result<u64, EsError> {
    client.refresh(index).await?;
    let query = json!({ "bool": { "must_not": [ { "term": { GENERATION_FIELD: generation } } ] } });
    let deleted = client.delete_by_query(index, &query).await?;
    client.refresh(index).await?;
    Ok(deleted)
}

/// Deletes every document of `index` whose fields equal `fields` (a JSON object of
/// field → string/number/bool, e.g. `{"table": "items", "schema": "public"}` for a
/// `TRUNCATE`) and returns how many were deleted.
///
/// Refreshes first, so every earlier write is visible to the query (the caller has applied
/// them: see `jobs::ordering`). Matching is exact: each field is looked up in the index's
/// mapping and queried where it holds exact values — the field itself when it is `keyword`
/// (or numeric/boolean), its `.keyword` sub-field when it is `text` with one (Elasticsearch's
/// dynamic mapping for strings). A field the mapping does not know is held by no document:
/// nothing is deleted. A `text` field without a keyword sub-field cannot be matched exactly and
/// is an error (a term query on analysed text could delete documents that merely share a word).
pub async fn delete_matching(
    client: &EsClient,
    index: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<u64, EsError> {
    if fields.is_empty() {
        return Err(EsError::Config("delete_matching needs at least one field".into()));
    }
    client.refresh(index).await?;
    let mapping = client.get_mapping_per_index(index).await?;
    let mut filters = Vec::with_capacity(fields.len());
    for (field, value) in fields {
        let Some(target) = exact_field(&mapping, field)? else {
            tracing::debug!(index, field, "delete_matching: no document has this field; nothing to delete");
            return Ok(0);
        };
        if !(value.is_string() || value.is_number() || value.is_boolean()) {
            return Err(EsError::Config(format!(
                "delete_matching: the value of {field:?} must be a string, number or boolean, not {value}"
            )));
        }
        filters.push(json!({ "term": { target: value } }));
    }
    let deleted = client.delete_by_query(index, &json!({ "bool": { "filter": filters } })).await?;
    Ok(deleted)
}

/// Where `field` holds exact values in a `GET _mapping` answer: `Some(path)`, `None` when no
/// index behind the name maps it, an error for analysed text without a keyword sub-field.
fn exact_field(mapping: &serde_json::Value, field: &str) -> Result<Option<String>, EsError> {
    let mut found = None;
    for (_, index) in mapping.as_object().into_iter().flatten() {
        let mut node = index.get("mappings");
        for part in field.split('.') {
            node = node.and_then(|n| n.get("properties")).and_then(|p| p.get(part));
        }
        let Some(node) = node else { continue };
        let ty = node.get("type").and_then(|t| t.as_str()).unwrap_or("object");
        let path = match ty {
            "text" | "match_only_text" => {
                let kw = node.get("fields").and_then(|f| f.as_object()).and_then(|f| {
                    f.iter().find(|(_, m)| m.get("type").and_then(|t| t.as_str()) == Some("keyword"))
                });
                match kw {
                    Some((name, _)) => format!("{field}.{name}"),
                    None => {
                        return Err(EsError::Config(format!(
                            "delete_matching: field {field:?} is analysed text without a keyword sub-field;                              map it as keyword (or add a keyword sub-field) so its documents can be matched exactly"
                        )))
                    }
                }
            }
            "object" | "nested" => {
                return Err(EsError::Config(format!("delete_matching: field {field:?} is an object")))
            }
            _ => field.to_owned(),
        };
        match &found {
            Some(p) if p != &path => {
                return Err(EsError::Config(format!(
                    "delete_matching: field {field:?} is mapped differently by the indices behind the name"
                )))
            }
            _ => found = Some(path),
        }
    }
    Ok(found)
}

/// Number of documents in `index` (after the last refresh).
pub async fn count(client: &EsClient, index: &str) -> Result<u64, EsError> {
    client.count(index, None).await
}

/// Elastic's default pipeline name, set on every new connector.
pub const DEFAULT_PIPELINE: &str = "search-default-ingestion";

/// The ingest pipeline a job's bulk requests name (`pipeline.name` of the
/// connector snapshot). The default pipeline is used only where it exists
/// (Elasticsearch with it installed); a pipeline the user named must exist
/// when the server can tell, otherwise the job fails saying so.
pub async fn job_pipeline(es: &EsClient, pipeline: &serde_json::Value) -> Result<Option<String>, String> {
    let name = pipeline.get("name").and_then(|n| n.as_str()).unwrap_or_default().trim();
    if name.is_empty() {
        return Ok(None);
    }
    let exists =
        es.pipeline_exists(name).await.map_err(|e| format!("cannot check ingest pipeline {name:?}: {e}"))?;
    match (name == DEFAULT_PIPELINE, exists) {
        (true, Some(true)) => Ok(Some(name.to_owned())),
        (true, _) => Ok(None),
        (false, Some(false)) => Err(format!(
            "ingest pipeline {name:?} does not exist: create it, or clear pipeline.name with UpdatePipeline"
        )),
        (false, _) => Ok(Some(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_fields_come_from_the_mapping() {
        let m = json!({"items": {"mappings": {"properties": {
            "table": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "code": {"type": "keyword"},
            "n": {"type": "long"},
            "body": {"type": "text"},
            "meta": {"properties": {"kind": {"type": "keyword"}}}
        }}}});
        assert_eq!(exact_field(&m, "table").unwrap().as_deref(), Some("table.keyword"));
        assert_eq!(exact_field(&m, "code").unwrap().as_deref(), Some("code"));
        assert_eq!(exact_field(&m, "n").unwrap().as_deref(), Some("n"));
        assert_eq!(exact_field(&m, "meta.kind").unwrap().as_deref(), Some("meta.kind"));
        assert_eq!(exact_field(&m, "absent").unwrap(), None);
        assert!(exact_field(&m, "body").unwrap_err().to_string().contains("keyword"));
        assert!(exact_field(&m, "meta").is_err());
    }

    #[test]
    fn pipeline_flags() {
        let f = pipeline_fragment(
            &json!({"name": "p", "extract_binary_content": true, "run_ml_inference": false}),
        );
        let v: serde_json::Value = serde_json::from_slice(&[b"{", f.as_slice(), b"}"].concat()).unwrap();
        assert_eq!(
            v,
            json!({"_extract_binary_content": true, "_reduce_whitespace": false, "_run_ml_inference": false})
        );
    }

    #[test]
    fn fragment() {
        assert_eq!(generation_fragment(1234), br#""_ferry_sync_generation":1234"#.to_vec());
    }
}
