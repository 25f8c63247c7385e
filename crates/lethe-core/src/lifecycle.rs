//! A target's window as the cloud's own lifecycle policy (S3, Azure Blob, GCS), so the
//! store enforces the same window when Lethe is not running. Pure: renders JSON only.
//!
//! A lifecycle rule knows nothing of legal holds, exceptions, per-object `expires_at` or
//! erasure requests; callers must say so wherever they show the policy.

use serde_json::{Value, json};

use crate::config::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Azure,
    Gcs,
}

/// What the policy cannot express, for the warning shown with it.
pub const CAVEAT: &str = "a lifecycle rule cannot express legal holds, exceptions, per-object expires_at or erasure requests: the store will delete held and excepted objects on schedule. Suspend the rule while a hold on this target is active, and keep running `lethe sweep`, which honours them.";

/// `scheme://bucket/prefix` split into (scheme, bucket, prefix).
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((scheme, bucket, prefix))
}

/// Whole days of the target's effective window (retention capped by max and its level's
/// cap, never under the legal minimum), rounded up: a store may keep an object up to a day
/// longer than Lethe would, never shorter. Caps an object names for itself are not known
/// to the store: it keeps those objects longer, and Lethe deletes them on time.
pub fn days(w: &Window) -> i64 {
    let mut effective = w.retention;
    if let Some(cap) = w.earliest_cap(false) {
        effective = effective.min(cap);
    }
    if let Some(min) = w.min {
        effective = effective.max(min);
    }
    ((effective.as_secs() + 86_399) / 86_400).max(1)
}

/// The lifecycle policy for the objects under `url` (`scheme://bucket/prefix`) of the
/// target `name`, whose window is `window`.
pub fn render(name: &str, window: &Window, url: &str, cloud: Cloud) -> Result<Value, String> {
    let (scheme, bucket, prefix) =
        split_url(url).ok_or_else(|| format!("target {name}: url {url:?} has no bucket"))?;
    let expected = match cloud {
        Cloud::S3 => ["s3", "s3a"].as_slice(),
        Cloud::Azure => ["az", "azure", "abfs", "abfss"].as_slice(),
        Cloud::Gcs => ["gs"].as_slice(),
    };
    if !expected.contains(&scheme) {
        return Err(format!(
            "target {} is on {scheme}://, not a {} store",
            name,
            match cloud {
                Cloud::S3 => "S3",
                Cloud::Azure => "Azure Blob",
                Cloud::Gcs => "GCS",
            }
        ));
    }
    let days = days(window);
    let id = format!("lethe-{name}");
    Ok(match cloud {
        Cloud::S3 => json!({
            "Rules": [{
                "ID": id,
                "Filter": { "Prefix": prefix },
                "Status": "Enabled",
                "Expiration": { "Days": days },
                "NoncurrentVersionExpiration": { "NoncurrentDays": 1 }
            }]
        }),
        Cloud::Azure => json!({
            "rules": [{
                "enabled": true,
                "name": id,
                "type": "Lifecycle",
                "definition": {
                    "actions": {
                        "baseBlob": { "delete": { "daysAfterModificationGreaterThan": days } },
                        "snapshot": { "delete": { "daysAfterCreationGreaterThan": days } },
                        "version": { "delete": { "daysAfterCreationGreaterThan": days } }
                    },
                    "filters": {
                        "blobTypes": ["blockBlob"],
                        "prefixMatch": [format!("{bucket}/{prefix}")]
                    }
                }
            }]
        }),
        Cloud::Gcs => json!({
            "lifecycle": {
                "rule": [{
                    "action": { "type": "Delete" },
                    "condition": { "age": days, "matchesPrefix": [prefix] }
                }]
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    fn target(url: &str, retention: &str, max: Option<&str>) -> (&'static str, Window, String) {
        let d = |t: &str| Duration::parse(t).unwrap_or(Duration::from_days(1));
        let window = Window::new(d(retention), max.map(d));
        ("blobs", window, url.to_string())
    }

    fn render_for(t: &(&str, Window, String), cloud: Cloud) -> Result<Value, String> {
        render(t.0, &t.1, &t.2, cloud)
    }

    #[test]
    fn renders_each_cloud_with_the_window_in_days() {
        let s3 = render_for(&target("s3://datasets/finetune/", "90d", None), Cloud::S3);
        let s3 = s3.unwrap_or_default();
        assert_eq!(s3["Rules"][0]["Expiration"]["Days"], 90);
        assert_eq!(s3["Rules"][0]["Filter"]["Prefix"], "finetune/");
        let az = render_for(
            &target("az://container/data/", "30d", Some("7d")),
            Cloud::Azure,
        )
        .unwrap_or_default();
        let d = &az["rules"][0]["definition"];
        assert_eq!(
            d["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"],
            7
        );
        assert_eq!(d["filters"]["prefixMatch"][0], "container/data/");
        let gs = render_for(&target("gs://b/p/", "36h", None), Cloud::Gcs).unwrap_or_default();
        assert_eq!(
            gs["lifecycle"]["rule"][0]["condition"]["age"], 2,
            "rounded up"
        );
        assert!(render_for(&target("s3://b/p", "1d", None), Cloud::Azure).is_err());
    }
}
