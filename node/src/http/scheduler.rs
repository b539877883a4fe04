//! Appendix A.5 and A.6 — the scheduler's scoring as a service — and the list of strategies.
//! The scores come from the pure scoring core in `jcs_raft::schedule`, over the replicated state.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use jcs_api::model::patterns::{self, AlgorithmId};
use jcs_api::model::{Dataset, Job, ObjectKind, ResourceSpec};
use jcs_api::validate::{self, MAX_ID_LEN};
use jcs_api::{ApiError, Envelope, ErrorCode};
use jcs_raft::schedule::{self, combine_algorithm_scores, DataLocation, JobContext, ScoreError, Strategy, Weights};
use jcs_raft::tables;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::Required;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ok, HttpError, HttpResult};
use super::extract::Params;
use super::state::{AppState, ReadOptions};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(algorithms)).routes(routes!(algorithm_score)).routes(routes!(evaluate_score))
}

/// A strategy of standard 6.6.2.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmInfo {
    pub algorithm_id: String,
    pub default_weight: u32,
    pub higher_is_better: bool,
}

/// A.5 / A.6 response data.
#[derive(Debug, Serialize, ToSchema)]
pub struct Score {
    pub score: u32,
}

/// Which demand A.5 scores.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ScoreQuery {
    /// Score the demand of this spec among the centers offering it. Default: one CPU with no
    /// price, among all centers.
    #[param(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub resource_spec_id: Option<String>,
    /// Score for this job instead: its first task's spec, its dataset's location and size, its
    /// duration estimate. Not together with `resourceSpecId`.
    #[param(max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$")]
    pub job_id: Option<String>,
    /// Judge the network path from this region, as a job's `userRegion` is (strategy
    /// `network_quality`; also `lowest_energy` with `jobId`, whose data is copied over it).
    /// Default: the job's own `userRegion`, else its data's region; without a job, none (the
    /// center's uplink alone). At most 63 characters.
    #[param(
        max_length = 63,
        pattern = "^[\\t\\n \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\
        [^\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]\
        [^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub user_region: Option<String>,
}

/// A.6 inputs: two comma-separated lists of equal length.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateQuery {
    pub algorithm_ids: String,
    pub algorithm_scores: String,
}

/// Written by hand: the derive drops `required` and the description of a parameter whose
/// schema comes from a function (utoipa 5.5), and the patterns live in `patterns`.
impl IntoParams for EvaluateQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, description: &str, schema: utoipa::openapi::Schema| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        vec![
            param(
                "algorithmIds",
                "Strategy ids, e.g. `least_workload,lowest_price`: at least one, none twice.",
                patterns::algorithm_id_list_schema(),
            ),
            param(
                "algorithmScores",
                "Their scores for the center, 0..=100, e.g. `80,20`: as many as `algorithmIds`.",
                patterns::score_list_schema(),
            ),
        ]
    }
}

/// The strategies, their ids and default weights in the evaluation model.
#[utoipa::path(get, path = "/scheduler/algorithms", tag = "scheduler",
    responses((status = 200, body = Envelope<Vec<AlgorithmInfo>>)))]
async fn algorithms() -> HttpResult<Vec<AlgorithmInfo>> {
    let weights = Weights::default();
    ok(Strategy::ALL
        .iter()
        .map(|s| AlgorithmInfo {
            algorithm_id: s.id().into(),
            default_weight: weights.get(*s),
            higher_is_better: s.higher_is_better(),
        })
        .collect())
}

/// The demand scored when A.5 names no spec: one CPU, no price, offered everywhere.
fn default_spec(center_ids: Vec<String>) -> ResourceSpec {
    ResourceSpec {
        resource_spec_id: "default".into(),
        resource_spec_name: "1 CPU".into(),
        resource_quantity: BTreeMap::from([("cpu".to_string(), "1".to_string())]),
        service_type: Default::default(),
        price: 0,
        computing_center_list: center_ids.join(","),
        center_prices: BTreeMap::new(),
        created_at: 0,
        updated_at: 0,
    }
}

/// A.5 — one strategy's normalized score (0..=100) for a center, among the candidates.
#[utoipa::path(get, path = "/scheduler/algorithm/{algorithmId}/score/{centerId}", tag = "scheduler",
    params(
        ("algorithmId" = inline(AlgorithmId), Path),
        ("centerId" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"),
        ScoreQuery,
        ReadOptions
    ),
    responses((status = 200, body = Envelope<Score>)))]
async fn algorithm_score(
    State(state): State<AppState>,
    Path((algorithm_id, center_id)): Path<(String, String)>,
    Params(query): Params<ScoreQuery>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<Score> {
    let strategy = Strategy::from_id(&algorithm_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("algorithm '{algorithm_id}' not found")))?;
    validate::id("centerId", &center_id, MAX_ID_LEN)?;
    if let Some(region) = &query.user_region {
        validate::text("userRegion", region, MAX_ID_LEN)?;
    }
    let reader = state.read(&options).await?;
    if !tables::exists(reader, ObjectKind::Center, &center_id)? {
        return Err(ApiError::not_found("center", &center_id).into());
    }
    let job = match &query.job_id {
        Some(_) if query.resource_spec_id.is_some() => {
            return Err(ApiError::invalid("jobId", "give jobId or resourceSpecId, not both").into())
        }
        Some(id) => {
            validate::id("jobId", id, MAX_ID_LEN)?;
            let job: Job = tables::get(reader, ObjectKind::Job, id)?.ok_or_else(|| ApiError::not_found("job", id))?;
            Some(job)
        }
        None => None,
    };
    let spec_id = job.as_ref().map(|j| j.tasks[0].resource_spec_id.clone()).or(query.resource_spec_id.clone());
    let spec = match &spec_id {
        Some(id) => {
            validate::id("resourceSpecId", id, MAX_ID_LEN)?;
            tables::get(reader, ObjectKind::ResourceSpec, id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownReference,
                    format!("resourceSpecId: resource spec '{id}' does not exist"),
                )
            })?
        }
        None => {
            let centers: Vec<jcs_api::model::Center> = tables::all(reader, ObjectKind::Center)?;
            default_spec(centers.into_iter().map(|c| c.ai_center_id).collect())
        }
    };
    let demand = spec.validate()?;
    let snapshot =
        schedule::state::snapshot_for_spec(reader, &spec)?.with_links(state.scheduler.settings.region_links.clone());
    let position = snapshot.candidates.iter().position(|c| c.id() == center_id).ok_or_else(|| {
        ApiError::invalid("centerId", format!("center '{center_id}' does not offer spec '{}'", spec.resource_spec_id))
    })?;
    let mut context = JobContext::new(demand, 1);
    if let Some(job) = &job {
        context.replicas = job.tasks[0].replica_number;
        context.duration_secs = job.options.duration_secs.map_or(context.duration_secs, |s| s as f64);
        let dataset = job.options.dataset_id.as_deref().map(|d| tables::get::<Dataset>(reader, ObjectKind::Dataset, d));
        if let Some(dataset) = dataset.transpose()?.flatten() {
            let mut holders = Vec::new();
            for holder in &dataset.location {
                holders.extend(tables::get::<jcs_api::model::Center>(
                    reader,
                    ObjectKind::Center,
                    &holder.ai_center_id,
                )?);
            }
            context.data = Some(DataLocation {
                center_ids: dataset.location.iter().map(|l| l.ai_center_id.clone()).collect(),
                size_mb: dataset.size_mb as f64,
                region: schedule::data_region(&holders).map(str::to_string),
            });
        }
        // As a cycle judges it: from the user's region, else the data's.
        context.origin = job.options.user_region.clone().or_else(|| context.data.as_ref()?.region.clone());
    }
    if let Some(region) = query.user_region {
        context.origin = Some(region);
    }
    let scores = schedule::score(strategy, &context, &snapshot);
    ok(Score { score: scores[position] })
}

fn score_error(err: ScoreError) -> HttpError {
    let field = match err {
        ScoreError::LengthMismatch { .. } => "algorithmScores",
        ScoreError::UnknownAlgorithm(_) | ScoreError::NoAlgorithm | ScoreError::DuplicateAlgorithm(_) => "algorithmIds",
        ScoreError::ScoreOutOfRange(_) => "algorithmScores",
    };
    ApiError::invalid(field, err).into()
}

/// A.6 — the evaluation model's combined score for a center from per-strategy scores.
#[utoipa::path(get, path = "/scheduler/evaluate/score/{centerId}", tag = "scheduler",
    params(("centerId" = String, Path, max_length = 63, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"), EvaluateQuery,
        ReadOptions),
    responses((status = 200, body = Envelope<Score>)))]
async fn evaluate_score(
    State(state): State<AppState>,
    Path(center_id): Path<String>,
    Params(query): Params<EvaluateQuery>,
    Params(options): Params<ReadOptions>,
) -> HttpResult<Score> {
    validate::id("centerId", &center_id, MAX_ID_LEN)?;
    let ids = validate::split_list(&query.algorithm_ids);
    let scores = validate::split_list(&query.algorithm_scores)
        .iter()
        .map(|s| s.parse::<i64>().map_err(|_| ApiError::invalid("algorithmScores", format!("'{s}' is not an integer"))))
        .collect::<Result<Vec<_>, _>>()?;
    let reader = state.read(&options).await?;
    if !tables::exists(reader, ObjectKind::Center, &center_id)? {
        return Err(ApiError::not_found("center", &center_id).into());
    }
    let score = combine_algorithm_scores(&ids, &scores).map_err(score_error)?;
    ok(Score { score })
}

#[cfg(test)]
mod tests {
    use jcs_api::model::patterns::{ADAPTER_KINDS, ALGORITHM_IDS};

    use super::*;

    /// The document's lists of strategies and adapter kinds are the code's.
    #[test]
    fn documented_ids_match_the_code() {
        let strategies: Vec<&str> = Strategy::ALL.iter().map(|s| s.id()).collect();
        assert_eq!(strategies, ALGORITHM_IDS);
        assert_eq!(jcs_adapters::Registry::builtin().kinds().collect::<Vec<_>>(), ADAPTER_KINDS);
    }

    fn patterns_in<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(fields) => {
                found.extend(fields.get("pattern").and_then(serde_json::Value::as_str));
                fields.values().for_each(|v| patterns_in(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| patterns_in(v, found)),
            _ => {}
        }
    }

    /// The patterns spelt out in attributes are those of `jcs_api::model::patterns`, and every
    /// id in a path has one.
    #[test]
    fn every_pattern_in_the_document_is_a_known_one() {
        let doc = serde_json::to_value(crate::http::api().1).unwrap();
        let mut found = Vec::new();
        patterns_in(&doc, &mut found);
        for pattern in found {
            assert!(jcs_api::model::patterns::ALL.contains(&pattern), "not in `patterns`: {pattern}");
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for operation in item.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let schema = &parameter["schema"];
                    if parameter["in"] == "path" && schema["type"] == "string" {
                        let bounded = schema.get("pattern").is_some() || schema.get("enum").is_some();
                        assert!(bounded, "{path}: {} has no pattern", parameter["name"]);
                    }
                }
            }
        }
    }
}
