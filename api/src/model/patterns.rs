//! The field rules of [`crate::validate`] as JSON Schema, for the OpenAPI document: a request
//! that fits the schema passes the field rules, and one that does not is refused.
//!
//! * Patterns are ECMA-262, and anchored (`^…$`): Rust's `regex`, Python's `re` and the
//!   JavaScript engines read them alike. Character classes are spelt out (no `\s`, `\d`, `.`),
//!   because the engines disagree on what those match outside ASCII.
//! * `#[schema(pattern = …)]` takes only a string literal, so a field spells its pattern out
//!   again; `schema_tests` checks that every pattern the document holds is one of these.
//! * The `*_schema` functions describe the fields a derive cannot: maps whose keys or values
//!   have rules, the id lists that are a string or an array, a `[longitude, latitude]` pair.
//!   They serve `#[schema(schema_with = …)]`.
//!
//! Rules across fields or against stored state (unique task names, one pin or one per replica,
//! references to catalog objects) are not expressible here; the server checks them.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ArrayItems, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::validate::{MAX_ID_LEN, MAX_ID_LIST_ITEMS};

/// [`crate::validate::id`]: letters, digits, `.`, `_`, `-`, not starting with `.` (with
/// `maxLength` [`MAX_ID_LEN`], or the field's own limit).
pub const ID: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$";

/// [`crate::validate::text`]: not blank (some character other than Unicode white space), no
/// control characters but `\n` and `\t`.
pub const TEXT: &str = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
    [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";

/// [`crate::validate::optional_text`]: no control characters but `\n` and `\t`.
pub const OPTIONAL_TEXT: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";

/// A dataset's id, `data_name@data_version`, both ids.
pub const DATASET_ID: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}@[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$";

/// [`crate::validate::id_list`]: comma-separated ids, each with blanks around it; blank items
/// are dropped. (That no id is listed twice is not expressible.)
pub const ID_LIST: &str = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}\
    [\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*)?\
    (?:,[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}\
    [\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*)?)*$";

/// [`crate::quantity::parse_quantity`]: a non-negative decimal number (no exponent) with an
/// optional unit suffix, white space around it.
pub const QUANTITY: &str = "^\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:\\+?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)|-(?:0+\\.?0*|\\.0+))(?:[mkMGTP]|[KMGTP]i)?\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*$";

/// [`crate::validate::host_port`]: `HOST:PORT`, any host, a port from 1 to 65535.
pub const HOST_PORT: &str = "^(?:[^:]|:)+:\\+?0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}\
    |655[0-2][0-9]|6553[0-5])$";

/// As [`HOST_PORT`], or empty.
pub const OPTIONAL_HOST_PORT: &str = "^(?:(?:[^:]|:)+:\\+?0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}\
    |65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$";

/// A confirmed replica, `jobId/taskIndex/replicaIndex` ([`super::ReplicaRef::parse`]): an id and
/// two integers from 0 to 4294967295.
pub const REPLICA_REF: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}\
    /\\+?0*(?:[0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}\
    |42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5])\
    /\\+?0*(?:[0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}|4294[0-8][0-9]{5}\
    |42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}|42949672[0-8][0-9]|429496729[0-5])$";

/// An `Idempotency-Key` header: visible ASCII, spaces and tabs, not blank. (It starts and ends
/// with a visible character: HTTP drops white space around a header value, and clients refuse
/// to send it.)
pub const IDEMPOTENCY_KEY: &str = "^[!-~](?:[\\t -~]*[!-~])?$";

/// The strategies' `algorithmId`s (standard 6.6.2, `jcs_raft::schedule::Strategy`), which
/// `weights` and A.5/A.6 accept.
pub const ALGORITHM_IDS: [&str; 9] = [
    "least_workload",
    "most_free_capacity",
    "data_affinity",
    "lowest_price",
    "lowest_energy",
    "highest_performance",
    "highest_security",
    "load_fairness",
    "network_quality",
];

/// [`ALGORITHM_IDS`] as a schema, for a path parameter.
pub struct AlgorithmId;

impl PartialSchema for AlgorithmId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(ALGORITHM_IDS)).into()
    }
}

impl ToSchema for AlgorithmId {}

/// A.6 `algorithmIds`: comma-separated [`ALGORITHM_IDS`], at least one, blanks around each and
/// blank items dropped. (That none is listed twice is not expressible.)
pub const ALGORITHM_ID_LIST: &str = "^\
    (?:[\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*,)*\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:least_workload|most_free_capacity|data_affinity|lowest_price|lowest_energy|highest_performance\
    |highest_security|load_fairness|network_quality)\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:,[\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:(?:least_workload|most_free_capacity|data_affinity|lowest_price|lowest_energy|highest_performance\
    |highest_security|load_fairness|network_quality)\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*)?)*$";

/// A.6 `algorithmScores`: comma-separated integers from 0 to 100, at least one, blanks around
/// each and blank items dropped. (That there are as many as `algorithmIds` is not expressible.)
pub const SCORE_LIST: &str = "^\
    (?:[\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*,)*\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:\\+?0*(?:100|[1-9]?[0-9])|-0+)\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:,[\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
    (?:(?:\\+?0*(?:100|[1-9]?[0-9])|-0+)\
    [\\t\\n\\u000B\\u000C\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*)?)*$";

/// Every pattern above: the only ones the document may hold.
pub const ALL: [&str; 12] = [
    ID,
    TEXT,
    OPTIONAL_TEXT,
    DATASET_ID,
    ID_LIST,
    QUANTITY,
    HOST_PORT,
    OPTIONAL_HOST_PORT,
    REPLICA_REF,
    IDEMPOTENCY_KEY,
    ALGORITHM_ID_LIST,
    SCORE_LIST,
];

/// The adapter kinds a center may name (`jcs_adapters::KINDS`).
pub const ADAPTER_KINDS: [&str; 3] = ["local", "sim", "slurm"];

/// [`ADAPTER_KINDS`] or empty (no adapter: the scheduler places nothing at the center), as a
/// schema for `adapter.kind`.
pub struct AdapterKind;

impl PartialSchema for AdapterKind {
    fn schema() -> RefOr<Schema> {
        let kinds = std::iter::once("").chain(ADAPTER_KINDS);
        ObjectBuilder::new().schema_type(Type::String).enum_values(Some(kinds)).into()
    }
}

impl ToSchema for AdapterKind {}

/// How a dataset replica may be used (Table 6 `access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DatasetAccess {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "rw")]
    ReadWrite,
}

/// How a past download ended (Table 6 `download_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DownloadOutcome {
    Success,
    Interrupted,
    Failed,
}

fn string(pattern: &str, max_length: usize) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).max_length(Some(max_length))
}

fn number(minimum: f64, maximum: f64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
}

fn map(description: &str, keys: ObjectBuilder, values: ObjectBuilder) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property_names(Some(keys))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(values.build())))))
}

/// `weights`: an `algorithmId` to its weight, 0 to [`super::MAX_WEIGHT`].
pub fn weights_schema() -> Schema {
    let keys = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(ALGORITHM_IDS));
    let values = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(0))
        .maximum(Some(super::MAX_WEIGHT));
    Schema::Object(
        map("Extension: per-strategy weight overrides (`algorithmId` → weight, 0..=1000).", keys, values).build(),
    )
}

/// A resource spec's `center_prices`: a center id to its price, at least 0.
pub fn center_prices_schema() -> Schema {
    let values = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0));
    let description = "Extension: per-center price overriding `price` (center id → price, at least 0).";
    Schema::Object(map(description, string(ID, MAX_ID_LEN), values).build())
}

/// A center's `performance`: a device kind to its relative speed, 0 to 1000.
pub fn performance_schema() -> Schema {
    let description = "Extension: relative speed per device kind (`{\"gpu\": 1.3}`), 1.0 when absent; 0..=1000.";
    Schema::Object(map(description, ObjectBuilder::new().schema_type(Type::String), number(0.0, 1e3)).build())
}

/// A power model's `device_watts`: a device kind to its watts, 0 to 10⁹.
pub fn device_watts_schema() -> Schema {
    let description = "Execution power per device while running (formula 1, `P_exe`), e.g. `{\"gpu\": 300}`; \
                       0..=1e9 watts.";
    Schema::Object(map(description, ObjectBuilder::new().schema_type(Type::String), number(0.0, 1e9)).build())
}

/// A resource spec's `resource_quantity`: at least one resource, each a quantity.
pub fn resource_quantity_schema() -> Schema {
    let description = "Kubernetes-style quantities: `{\"cpu\":\"8\",\"memory\":\"64Gi\",\"gpu\":\"1\"}`; at least one.";
    let values = ObjectBuilder::new().schema_type(Type::String).pattern(Some(QUANTITY));
    Schema::Object(
        map(description, ObjectBuilder::new().schema_type(Type::String), values).min_properties(Some(1)).build(),
    )
}

/// A.6 `algorithmIds` (a query parameter: its pattern is [`ALGORITHM_ID_LIST`]).
pub fn algorithm_id_list_schema() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::String).pattern(Some(ALGORITHM_ID_LIST)).build())
}

/// A.6 `algorithmScores` (a query parameter: its pattern is [`SCORE_LIST`]).
pub fn score_list_schema() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::String).pattern(Some(SCORE_LIST)).build())
}

/// The standard's comma-separated id lists: a string, or an array whose items are joined with
/// commas.
pub fn id_list_schema() -> Schema {
    let text = string(ID_LIST, MAX_ID_LIST_ITEMS * (MAX_ID_LEN + 1));
    let array = ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String).pattern(Some(ID_LIST)));
    Schema::OneOf(
        OneOfBuilder::new()
            .description(Some(
                "Comma-separated ids (blanks around them and empty items are ignored; no id twice), \
                 or an array of such strings, which is joined with commas.",
            ))
            .item(text)
            .item(array)
            .build(),
    )
}

/// A center's `geometry`: `[longitude, latitude]` in degrees.
pub fn geometry_schema() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .description(Some("`[longitude, latitude]` in degrees."))
            .prefix_items([number(-180.0, 180.0), number(-90.0, 90.0)])
            .items(ArrayItems::False)
            .min_items(Some(2))
            .max_items(Some(2))
            .build(),
    )
}
