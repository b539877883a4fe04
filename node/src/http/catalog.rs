//! Catalog endpoints — centers, resource specs, images, datasets — in Appendix A's style:
//! create (POST collection), list (GET collection), get / replace / delete (item), plus a
//! center's monitoring report. One generic implementation serves every kind; the macro only
//! stamps out the documented, typed entry points.

use axum::extract::{Path, State};
use jcs_api::model::{Center, CenterMetrics, Dataset, Image, ObjectKind, Page, PageQuery, ResourceSpec};
use jcs_api::validate::{self, MAX_ID_LEN};
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::command::{Command, Outcome, WriteMode};
use jcs_raft::kv::get_json;
use jcs_raft::tables;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpError, HttpResult};
use super::extract::{Body, Params, Replacement};
use super::state::{AppState, ReadOptions};

/// What differs between catalog kinds.
pub trait CatalogKind {
    type Object: Serialize + DeserializeOwned + Send + 'static;
    const KIND: ObjectKind;
    fn id(object: &Self::Object) -> String;
    fn put(object: Self::Object, mode: WriteMode) -> Command;
    fn delete(id: String) -> Command;
    fn written(outcome: Outcome) -> Option<Self::Object>;

    /// Checks an id taken from the URL path.
    fn check_id(id: &str) -> Result<(), ApiError> {
        validate::id("id", id, MAX_ID_LEN)
    }

    /// Checks what the replicated state cannot judge (it knows no adapters).
    fn check_at_edge(_object: &Self::Object) -> Result<(), ApiError> {
        Ok(())
    }
}

macro_rules! catalog_kind {
    ($marker:ident, $object:ty, $kind:expr, |$o:ident| $id:expr, $put:ident { $field:ident }, $delete:ident, $outcome:ident
        $(, check_id |$path_id:ident| $check:expr)? $(, check_at_edge |$edge_object:ident| $edge_check:expr)?) => {
        pub struct $marker;
        impl CatalogKind for $marker {
            type Object = $object;
            const KIND: ObjectKind = $kind;
            fn id($o: &$object) -> String {
                $id
            }
            fn put($field: $object, mode: WriteMode) -> Command {
                Command::$put { $field, mode }
            }
            fn delete(id: String) -> Command {
                Command::$delete { id }
            }
            fn written(outcome: Outcome) -> Option<$object> {
                match outcome {
                    Outcome::$outcome(object) => Some(object),
                    _ => None,
                }
            }
            $(
                fn check_id($path_id: &str) -> Result<(), ApiError> {
                    $check
                }
            )?
            $(
                fn check_at_edge($edge_object: &$object) -> Result<(), ApiError> {
                    $edge_check
                }
            )?
        }
    };
}

catalog_kind!(
    Centers,
    Center,
    ObjectKind::Center,
    |c| c.ai_center_id.clone(),
    PutCenter { center },
    DeleteCenter,
    Center,
    check_at_edge | center | {
        let kind = center.adapter.kind.as_str();
        let registry = jcs_adapters::Registry::builtin();
        if kind.is_empty() || registry.knows(kind) {
            Ok(())
        } else {
            let known: Vec<&str> = registry.kinds().collect();
            let why = format!("'{kind}' is not one of {} (or empty: no adapter)", known.join(", "));
            Err(ApiError::invalid("adapter.kind", why))
        }
    }
);
catalog_kind!(
    Specs,
    ResourceSpec,
    ObjectKind::ResourceSpec,
    |s| s.resource_spec_id.clone(),
    PutSpec { spec },
    DeleteSpec,
    Spec
);
catalog_kind!(Images, Image, ObjectKind::Image, |i| i.image_id.clone(), PutImage { image }, DeleteImage, Image);
catalog_kind!(
    Datasets,
    Dataset,
    ObjectKind::Dataset,
    |d| d.dataset_id(),
    PutDataset { dataset },
    DeleteDataset,
    Dataset,
    check_id | id | {
        let (name, version) =
            id.split_once('@').ok_or_else(|| ApiError::invalid("id", "must be data_name@data_version"))?;
        validate::id("id", name, MAX_ID_LEN)?;
        validate::id("id", version, MAX_ID_LEN)
    }
);

fn unexpected(outcome: &Outcome) -> HttpError {
    ApiError::new(ErrorCode::Internal, format!("unexpected outcome {outcome:?}")).into()
}

async fn write_object<K: CatalogKind>(state: &AppState, object: K::Object, mode: WriteMode) -> HttpResult<K::Object> {
    K::check_at_edge(&object)?;
    let outcome = state.write(K::put(object, mode)).await?;
    match K::written(outcome.clone()) {
        Some(object) => ok(object),
        None => Err(unexpected(&outcome)),
    }
}

async fn create<K: CatalogKind>(state: AppState, object: K::Object) -> HttpResult<K::Object> {
    write_object::<K>(&state, object, WriteMode::Create).await
}

async fn replace<K: CatalogKind>(state: AppState, id: String, body: Replacement<K::Object>) -> HttpResult<K::Object> {
    K::check_id(&id)?;
    let object = body.object;
    let body_id = K::id(&object);
    if body_id != id {
        return Err(ApiError::invalid("id", format!("path names '{id}' but the body names '{body_id}'")).into());
    }
    // Judged on a linearizable read: every write acknowledged before this request is seen (a
    // write racing this one may still land between the read and the replacement).
    let reader = state.read(&ReadOptions::default()).await?;
    if let Some(stored) = tables::get::<serde_json::Value>(reader, K::KIND, &id)? {
        let new = serde_json::to_value(&object).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        if let Some(field) = jcs_api::json::first_dropped_field(&stored, &new, &body.given) {
            let why =
                "is left out, and the replacement would lose its stored value; send it (its empty value to clear it)";
            return Err(ApiError::at(ErrorCode::FieldWouldBeLost, &field, why).into());
        }
    }
    write_object::<K>(&state, object, WriteMode::Replace).await
}

async fn get<K: CatalogKind>(state: AppState, id: String, options: ReadOptions) -> HttpResult<K::Object> {
    K::check_id(&id)?;
    let reader = state.read(&options).await?;
    match tables::get(reader, K::KIND, &id)? {
        Some(object) => ok(object),
        None => Err(ApiError::not_found(K::KIND.as_str(), &id).into()),
    }
}

async fn list<K: CatalogKind>(state: AppState, paging: PageQuery, options: ReadOptions) -> HttpResult<Page<K::Object>> {
    let window = paging.resolve()?;
    let reader = state.read(&options).await?;
    ok(tables::page(reader, K::KIND, window)?.within_bytes(state.limits.max_page_bytes))
}

async fn delete<K: CatalogKind>(state: AppState, id: String) -> HttpResult<()> {
    K::check_id(&id)?;
    match state.write(K::delete(id)).await? {
        Outcome::Deleted => ok(()),
        other => Err(unexpected(&other)),
    }
}

macro_rules! catalog_endpoints {
    ($module:ident, $marker:ty, $object:ty, $collection:tt, $item:tt, $tag:tt, $id_max:tt, $id_pattern:tt) => {
        pub mod $module {
            use super::*;

            #[utoipa::path(post, path = $collection, tag = $tag, operation_id = concat!("create_", stringify!($module)),
                request_body = $object, responses((status = 200, body = Envelope<$object>)))]
            pub async fn create_one(State(state): State<AppState>, Body(object): Body<$object>) -> HttpResult<$object> {
                create::<$marker>(state, object).await
            }

            #[utoipa::path(get, path = $collection, tag = $tag, operation_id = concat!("list_", stringify!($module)),
                params(PageQuery, ReadOptions), responses((status = 200, body = Envelope<Page<$object>>)))]
            pub async fn list_all(
                State(state): State<AppState>,
                Params(paging): Params<PageQuery>,
                Params(options): Params<ReadOptions>,
            ) -> HttpResult<Page<$object>> {
                list::<$marker>(state, paging, options).await
            }

            #[utoipa::path(get, path = $item, tag = $tag, operation_id = concat!("get_", stringify!($module)),
                params(("id" = String, Path, max_length = $id_max, pattern = $id_pattern), ReadOptions),
                responses((status = 200, body = Envelope<$object>)))]
            pub async fn get_one(
                State(state): State<AppState>,
                Path(id): Path<String>,
                Params(options): Params<ReadOptions>,
            ) -> HttpResult<$object> {
                get::<$marker>(state, id, options).await
            }

            #[utoipa::path(put, path = $item, tag = $tag, operation_id = concat!("replace_", stringify!($module)),
                params(("id" = String, Path, max_length = $id_max, pattern = $id_pattern)), request_body = $object,
                responses((status = 200, body = Envelope<$object>)))]
            pub async fn replace_one(
                State(state): State<AppState>,
                Path(id): Path<String>,
                body: Replacement<$object>,
            ) -> HttpResult<$object> {
                replace::<$marker>(state, id, body).await
            }

            #[utoipa::path(delete, path = $item, tag = $tag, operation_id = concat!("delete_", stringify!($module)),
                params(("id" = String, Path, max_length = $id_max, pattern = $id_pattern)),
                responses((status = 200, body = Envelope<Object>)))]
            pub async fn delete_one(State(state): State<AppState>, Path(id): Path<String>) -> HttpResult<()> {
                delete::<$marker>(state, id).await
            }

            pub fn routes() -> OpenApiRouter<AppState> {
                OpenApiRouter::new()
                    .routes(routes!(create_one, list_all))
                    .routes(routes!(get_one, replace_one, delete_one))
            }
        }
    };
}

// The last two arguments: the path id's `maxLength` and `pattern` (`jcs_api::model::patterns`).
catalog_endpoints!(
    centers,
    Centers,
    Center,
    "/openapi/v1/centers",
    "/openapi/v1/centers/{id}",
    "centers",
    63,
    "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
);
catalog_endpoints!(
    specs,
    Specs,
    ResourceSpec,
    "/openapi/v1/resourcespecs",
    "/openapi/v1/resourcespecs/{id}",
    "resourcespecs",
    63,
    "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
);
catalog_endpoints!(
    images,
    Images,
    Image,
    "/openapi/v1/images",
    "/openapi/v1/images/{id}",
    "images",
    63,
    "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
);
catalog_endpoints!(
    datasets,
    Datasets,
    Dataset,
    "/openapi/v1/datasets",
    "/openapi/v1/datasets/{id}",
    "datasets",
    127,
    "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}@[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$"
);

/// Table 4 — report a center's monitoring data.
#[utoipa::path(put, path = "/openapi/v1/centers/{id}/metrics", tag = "centers",
    params(("id" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
    request_body = CenterMetrics,
    responses((status = 200, body = Envelope<CenterMetrics>)))]
async fn put_metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(metrics): Body<CenterMetrics>,
) -> HttpResult<CenterMetrics> {
    validate::id("id", &id, MAX_ID_LEN)?;
    metrics.validate()?;
    match state.write(Command::ReportMetrics { center_id: id, metrics }).await? {
        Outcome::Metrics(metrics) => ok(metrics),
        other => Err(unexpected(&other)),
    }
}

/// Table 4 — a center's latest monitoring report.
#[utoipa::path(get, path = "/openapi/v1/centers/{id}/metrics", tag = "centers",
    params(("id" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ReadOptions),
    responses((status = 200, body = Envelope<CenterMetrics>)))]
async fn get_metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<CenterMetrics> {
    validate::id("id", &id, MAX_ID_LEN)?;
    let reader = state.read(&options).await?;
    if !tables::exists(reader, ObjectKind::Center, &id)? {
        return Err(ApiError::not_found("center", &id).into());
    }
    match get_json(reader, &tables::metrics_key(&id))? {
        Some(metrics) => ok(metrics),
        None => Err(ApiError::new(ErrorCode::NotFound, format!("center '{id}' has not reported metrics yet")).into()),
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(centers::routes())
        .merge(specs::routes())
        .merge(images::routes())
        .merge(datasets::routes())
        .routes(routes!(put_metrics, get_metrics))
}
