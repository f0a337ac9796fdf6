//! `GET /api/nearby?lat=&lng=&radius_m=&limit=&since=`: stored geo messages within `radius_m`
//! of a point, nearest first, each with `distance_m` (an index range per covering cell, then
//! the exact distance). Bad parameters answer 400 with the JSON error shape.

use actix_web::{web, HttpRequest, HttpResponse};
use locus_geo::Point;
use locus_storage::NearbyQuery;
use serde::Deserialize;
use serde_json::json;

use crate::http::broadcast::caller;
use crate::http::error::ApiError;
use crate::http::limits::Caller;
use crate::AppState;

/// Messages returned when the query gives no `limit`.
const LIMIT_DEFAULT: usize = 50;

#[derive(Deserialize)]
pub struct NearbyParams {
    lat: Option<String>,
    lng: Option<String>,
    radius_m: Option<String>,
    limit: Option<String>,
    since: Option<String>,
}

fn number(name: &str, v: &Option<String>) -> Result<f64, ApiError> {
    let raw = v
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("InvalidParameter", &format!("{name} is required")))?;
    raw.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidParameter",
                &format!("{name} must be a finite number"),
            )
        })
}

pub async fn nearby(
    req: HttpRequest,
    params: web::Query<NearbyParams>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Each query can hold a pool connection for several index scans: limited per caller.
    let who = caller(&req, &state)?;
    state.limits.read(&Caller::of(&req, &who))?;
    let geo = &state.config.geo;
    let center = Point::new(number("lat", &params.lat)?, number("lng", &params.lng)?)
        .map_err(|e| ApiError::bad_request("InvalidParameter", &e.to_string()))?;
    let radius_m = match &params.radius_m {
        None => geo.radius_m_default,
        some => number("radius_m", some)?,
    };
    let radius_m = locus_geo::radius(radius_m, geo.radius_m_min, geo.radius_m_max)
        .map_err(|e| ApiError::bad_request("InvalidParameter", &e.to_string()))?;
    let limit = match &params.limit {
        None => LIMIT_DEFAULT.min(geo.nearby_limit_max),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=geo.nearby_limit_max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidParameter",
                    &format!("limit must be an integer in 1..={}", geo.nearby_limit_max),
                )
            })?,
    };
    let since_ms = match &params.since {
        None => None,
        Some(s) => Some(locus_storage::time::parse_rfc3339_ms(s).ok_or_else(|| {
            ApiError::bad_request("InvalidParameter", "since must be an RFC 3339 time")
        })?),
    };
    let hits = state
        .engine
        .nearby(&NearbyQuery {
            center,
            radius_m,
            limit,
            since_ms,
        })
        .await?;
    let messages: Vec<_> = hits
        .into_iter()
        .map(|h| {
            json!({
                "id": h.message.id,
                "user_id": h.message.user_id,
                "content": h.message.content,
                "lat": h.message.point.lat,
                "lng": h.message.point.lng,
                "radius_m": h.message.radius_m,
                "distance_m": h.distance_m,
                "created_at": locus_storage::time::rfc3339_ms(h.message.created_at_ms),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}
