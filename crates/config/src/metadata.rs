//! `envoy.config.core.v3.Metadata` on listeners, virtual hosts, routes and clusters, which
//! plugins read as `xds.*_metadata`.

use crate::model::Metadata;
use crate::reader::{Ctx, Field};
use crate::struct_value::struct_fields;

const METADATA: &[&str] = &["filter_metadata", "typed_filter_metadata"];
const STRUCT: &[&str] = &["value"];

/// `metadata`: `filter_metadata` (namespace → Struct) and `typed_filter_metadata` (namespace →
/// `Any`; a `google.protobuf.Struct` only, which is what plugins can read field by field).
pub(crate) fn read_metadata(ctx: &mut Ctx, field: &Field<'_>) -> Metadata {
    let mut metadata = Metadata::default();
    let Some(mut msg) = field.message(ctx, METADATA) else { return metadata };
    if let Some(f) = msg.get(ctx, "filter_metadata") {
        for (namespace, value) in f.map_entries(ctx) {
            if let Some(fields) = struct_fields(ctx, &value) {
                metadata.filter_metadata.push((namespace, fields));
            }
        }
    }
    if let Some(f) = msg.get(ctx, "typed_filter_metadata") {
        for (namespace, value) in f.map_entries(ctx) {
            let Some(any) = value.any(ctx) else { continue };
            if any.type_name != "google.protobuf.Struct" || any.wrapped_in_typed_struct() {
                value.error(
                    ctx,
                    format!(
                        "metadata of type {} is not supported by wasmproxy (use google.protobuf.Struct)",
                        any.type_name
                    ),
                );
                continue;
            }
            let Some(mut body) = any.message(ctx, STRUCT) else { continue };
            let fields = match body.get(ctx, "value") {
                Some(v) => struct_fields(ctx, &v),
                None => Some(Vec::new()),
            };
            body.finish(ctx);
            if let Some(fields) = fields {
                metadata.typed_filter_metadata.push((namespace, fields));
            }
        }
    }
    msg.finish(ctx);
    metadata
}
