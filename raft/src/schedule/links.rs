//! The network between regions and the path from a job's user to a center. A center's own
//! `network` describes only its uplink; the links between regions (bandwidth, latency, jitter,
//! loss) come from the operator's configuration for now (measured later), so that policies
//! `network` and `qos` can judge the whole path from where the user is.

use std::collections::BTreeMap;

use jcs_api::model::{Center, NetworkPosition};
use serde::Deserialize;

/// One configured link between two regions. It serves both directions unless the reverse is
/// configured too.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// A region name, as centers name their `region`.
    pub from: String,
    pub to: String,
    /// Mbit/s; 0 (unset) leaves the bandwidth to the center's uplink.
    #[serde(default)]
    pub bandwidth_mbps: f64,
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    /// 0..=100.
    #[serde(default)]
    pub loss_pct: f64,
}

/// Why a set of links was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("link {index}: from and to must name regions")]
    EmptyRegion { index: usize },
    #[error("link {index}: from and to are both '{region}' (a region's own network is its centers' uplinks)")]
    SameRegion { index: usize, region: String },
    #[error("link {index} ({from} → {to}): {field} is {value}, must be a finite number ≥ 0")]
    BadNumber { index: usize, from: String, to: String, field: &'static str, value: f64 },
    #[error("link {index} ({from} → {to}): loss_pct is {value}, must be 0..=100")]
    BadLoss { index: usize, from: String, to: String, value: f64 },
    #[error("link {index}: {from} → {to} is given twice")]
    Duplicate { index: usize, from: String, to: String },
}

/// The configured links, looked up by (from, to) region in either direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionLinks {
    /// from → to → link, with every link's reverse added unless configured itself.
    by_from: BTreeMap<String, BTreeMap<String, Link>>,
}

impl RegionLinks {
    /// Checks and indexes `links`: region names present and distinct, numbers finite and not
    /// negative, loss a percentage, no (from, to) pair twice.
    pub fn new(links: &[Link]) -> Result<RegionLinks, LinkError> {
        let mut by_from: BTreeMap<String, BTreeMap<String, Link>> = BTreeMap::new();
        for (index, link) in links.iter().enumerate() {
            check(index, link)?;
            let to = by_from.entry(link.from.clone()).or_default();
            if to.insert(link.to.clone(), link.clone()).is_some() {
                return Err(LinkError::Duplicate { index, from: link.from.clone(), to: link.to.clone() });
            }
        }
        for link in links {
            let reverse = Link { from: link.to.clone(), to: link.from.clone(), ..link.clone() };
            by_from.entry(reverse.from.clone()).or_default().entry(reverse.to.clone()).or_insert(reverse);
        }
        Ok(RegionLinks { by_from })
    }

    /// The link from region `from` to region `to` (a link configured the other way serves too).
    pub fn path(&self, from: &str, to: &str) -> Option<&Link> {
        self.by_from.get(from)?.get(to)
    }
}

fn check(index: usize, link: &Link) -> Result<(), LinkError> {
    let (from, to) = (link.from.trim(), link.to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(LinkError::EmptyRegion { index });
    }
    if from == to {
        return Err(LinkError::SameRegion { index, region: from.to_string() });
    }
    let numbers = [
        ("bandwidth_mbps", link.bandwidth_mbps),
        ("latency_ms", link.latency_ms),
        ("jitter_ms", link.jitter_ms),
        ("loss_pct", link.loss_pct),
    ];
    if let Some((field, value)) = numbers.into_iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
        return Err(LinkError::BadNumber { index, from: link.from.clone(), to: link.to.clone(), field, value });
    }
    if link.loss_pct > 100.0 {
        return Err(LinkError::BadLoss { index, from: link.from.clone(), to: link.to.clone(), value: link.loss_pct });
    }
    Ok(())
}

/// The quality of a network path, hop after hop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathQuality {
    /// Mbit/s; 0 when nothing on the path says.
    pub bandwidth_mbps: f64,
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
}

impl PathQuality {
    /// A center's own uplink.
    pub fn uplink(network: &NetworkPosition) -> PathQuality {
        let NetworkPosition { bandwidth_mbps, latency_ms, jitter_ms, loss_pct, .. } = *network;
        PathQuality { bandwidth_mbps, latency_ms, jitter_ms, loss_pct }
    }

    /// A configured link between regions.
    pub fn of_link(link: &Link) -> PathQuality {
        let Link { bandwidth_mbps, latency_ms, jitter_ms, loss_pct, .. } = *link;
        PathQuality { bandwidth_mbps, latency_ms, jitter_ms, loss_pct }
    }

    /// This path followed by `next`: the narrower bandwidth (an unset 0 on either side does not
    /// count), latencies and jitters added, losses combined as `1 − (1 − a)(1 − b)`.
    pub fn then(self, next: PathQuality) -> PathQuality {
        let bandwidth_mbps = match (self.bandwidth_mbps > 0.0, next.bandwidth_mbps > 0.0) {
            (true, true) => self.bandwidth_mbps.min(next.bandwidth_mbps),
            (true, false) => self.bandwidth_mbps,
            _ => next.bandwidth_mbps,
        };
        let delivered = (1.0 - self.loss_pct / 100.0) * (1.0 - next.loss_pct / 100.0);
        PathQuality {
            bandwidth_mbps,
            latency_ms: self.latency_ms + next.latency_ms,
            jitter_ms: self.jitter_ms + next.jitter_ms,
            loss_pct: (1.0 - delivered) * 100.0,
        }
    }

    /// Effective bandwidth: Mbit/s less the loss rate, divided by `1 + (latency + 2 × jitter) /
    /// 10 ms`; `None` without a bandwidth.
    pub fn effective_mbps(&self) -> Option<f64> {
        (self.bandwidth_mbps > 0.0).then(|| {
            let delivered = self.bandwidth_mbps * (1.0 - self.loss_pct / 100.0);
            delivered / (1.0 + (self.latency_ms + 2.0 * self.jitter_ms) / 10.0)
        })
    }
}

/// The path from a job's `origin` region to `center`: the configured link from the origin to
/// the center's region, then the center's uplink. Without an origin, in the center's own region,
/// or with no link configured between the two, the uplink alone (as if the user sat at the
/// center's region border — an unknown link is not judged worse than a known one).
pub fn path_to(links: &RegionLinks, origin: Option<&str>, center: &Center) -> PathQuality {
    let uplink = PathQuality::uplink(&center.network);
    match origin.filter(|o| *o != center.region).and_then(|o| links.path(o, &center.region)) {
        Some(link) => PathQuality::of_link(link).then(uplink),
        None => uplink,
    }
}

/// The region data is copied from: the first of its holders that names one.
pub fn data_region<'c>(holders: impl IntoIterator<Item = &'c Center>) -> Option<&'c str> {
    holders.into_iter().map(|center| center.region.as_str()).find(|region| !region.is_empty())
}

/// Seconds to copy `size_mb` of data to `center` from the data's region: 0 when the center
/// holds a copy (`held_here`) or there is nothing to copy, else size (MB → Mbit) over the
/// bandwidth of the path from `data_region` ([`path_to`]); `None` when the path has none.
pub fn copy_secs(
    size_mb: f64,
    held_here: bool,
    links: &RegionLinks,
    data_region: Option<&str>,
    center: &Center,
) -> Option<f64> {
    if held_here || size_mb <= 0.0 {
        return Some(0.0);
    }
    let bandwidth = path_to(links, data_region, center).bandwidth_mbps;
    (bandwidth > 0.0).then(|| size_mb * 8.0 / bandwidth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fixtures::center;

    fn link(from: &str, to: &str, mbps: f64, latency: f64) -> Link {
        Link {
            from: from.into(),
            to: to.into(),
            bandwidth_mbps: mbps,
            latency_ms: latency,
            jitter_ms: 0.0,
            loss_pct: 0.0,
        }
    }

    fn at(region: &str, mbps: f64, latency: f64, jitter: f64, loss: f64) -> Center {
        let mut c = center(region);
        c.region = region.into();
        c.network = NetworkPosition {
            bandwidth_mbps: mbps,
            latency_ms: latency,
            jitter_ms: jitter,
            loss_pct: loss,
            ..Default::default()
        };
        c
    }

    #[test]
    fn a_link_serves_both_ways_unless_the_reverse_is_given() {
        let links = RegionLinks::new(&[link("east", "west", 100.0, 40.0), link("north", "south", 1.0, 1.0)]).unwrap();
        assert_eq!(links.path("east", "west").map(|l| l.latency_ms), Some(40.0));
        assert_eq!(links.path("west", "east").map(|l| l.latency_ms), Some(40.0));
        assert_eq!(links.path("west", "east").map(|l| (l.from.as_str(), l.to.as_str())), Some(("west", "east")));
        assert_eq!(links.path("east", "north"), None);
        let links = RegionLinks::new(&[link("east", "west", 100.0, 40.0), link("west", "east", 100.0, 55.0)]).unwrap();
        assert_eq!(links.path("east", "west").map(|l| l.latency_ms), Some(40.0));
        assert_eq!(links.path("west", "east").map(|l| l.latency_ms), Some(55.0), "the reverse given wins");
    }

    #[test]
    fn bad_links_are_refused_with_the_reason() {
        let cases: Vec<(Link, &str)> = vec![
            (link("", "west", 1.0, 1.0), "must name regions"),
            (link("east", " ", 1.0, 1.0), "must name regions"),
            (link("east", "east", 1.0, 1.0), "both 'east'"),
            (link("east", "west", -1.0, 1.0), "bandwidth_mbps is -1"),
            (link("east", "west", 1.0, f64::NAN), "latency_ms is NaN"),
            (Link { jitter_ms: f64::INFINITY, ..link("east", "west", 1.0, 1.0) }, "jitter_ms is inf"),
            (Link { loss_pct: 101.0, ..link("east", "west", 1.0, 1.0) }, "loss_pct is 101, must be 0..=100"),
        ];
        for (bad, why) in cases {
            let err = RegionLinks::new(std::slice::from_ref(&bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let twice = RegionLinks::new(&[link("east", "west", 1.0, 1.0), link("east", "west", 2.0, 2.0)]);
        assert_eq!(twice, Err(LinkError::Duplicate { index: 1, from: "east".into(), to: "west".into() }));
    }

    #[test]
    fn a_path_is_the_link_then_the_uplink() {
        let lossy = Link { jitter_ms: 2.0, loss_pct: 10.0, ..link("east", "west", 1_000.0, 30.0) };
        let links = RegionLinks::new(&[lossy]).unwrap();
        let path = path_to(&links, Some("east"), &at("west", 400.0, 5.0, 1.0, 20.0));
        assert_eq!(path.bandwidth_mbps, 400.0, "the narrower hop");
        assert_eq!((path.latency_ms, path.jitter_ms), (35.0, 3.0), "latency and jitter add");
        assert!((path.loss_pct - 28.0).abs() < 1e-9, "1 - 0.9 × 0.8 = 28 %: {}", path.loss_pct);
        let expected = 400.0 * 0.72 / (1.0 + (35.0 + 6.0) / 10.0);
        assert!((path.effective_mbps().unwrap() - expected).abs() < 1e-9);
        // An unset bandwidth on one hop leaves it to the other.
        let unset_uplink = path_to(&links, Some("east"), &at("west", 0.0, 5.0, 0.0, 0.0));
        assert_eq!(unset_uplink.bandwidth_mbps, 1_000.0);
        let unset_link = RegionLinks::new(&[link("east", "west", 0.0, 30.0)]).unwrap();
        let path = path_to(&unset_link, Some("east"), &at("west", 400.0, 5.0, 0.0, 0.0));
        assert_eq!((path.bandwidth_mbps, path.latency_ms), (400.0, 35.0));
    }

    #[test]
    fn without_an_origin_a_link_or_in_the_same_region_the_path_is_the_uplink() {
        let links = RegionLinks::new(&[link("east", "west", 10.0, 30.0)]).unwrap();
        let center = at("west", 400.0, 5.0, 1.0, 2.0);
        let uplink = PathQuality::uplink(&center.network);
        assert_eq!(path_to(&links, None, &center), uplink);
        assert_eq!(path_to(&links, Some("west"), &center), uplink, "same region");
        assert_eq!(path_to(&links, Some("north"), &center), uplink, "no link configured");
        assert_eq!(path_to(&RegionLinks::default(), Some("east"), &center), uplink);
        assert_eq!(path_to(&links, Some("east"), &at("east", 0.0, 0.0, 0.0, 0.0)).effective_mbps(), None);
    }

    #[test]
    fn data_is_copied_over_the_path_from_its_region() {
        let links = RegionLinks::new(&[link("east", "west", 100.0, 30.0)]).unwrap();
        let center = at("west", 400.0, 5.0, 0.0, 0.0);
        // 1,000 MB = 8,000 Mbit: over the 100 Mbit/s link from east, else over the uplink.
        assert_eq!(copy_secs(1_000.0, false, &links, Some("east"), &center), Some(80.0));
        assert_eq!(copy_secs(1_000.0, false, &links, None, &center), Some(20.0));
        assert_eq!(copy_secs(1_000.0, false, &links, Some("west"), &center), Some(20.0), "same region");
        assert_eq!(copy_secs(1_000.0, true, &links, Some("east"), &center), Some(0.0), "a copy is here");
        assert_eq!(copy_secs(0.0, false, &links, Some("east"), &center), Some(0.0), "nothing to copy");
        assert_eq!(copy_secs(1.0, false, &RegionLinks::default(), None, &at("west", 0.0, 0.0, 0.0, 0.0)), None);
    }
}
