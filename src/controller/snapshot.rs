//! Batched polling of steady instances: one paginated list per credential (200 a page)
//! refreshes every instance of that credential at once, instead of one GET per instance.
//!
//! Only steady instances are read from here; an instance in transition is looked up directly,
//! so the operator sees its own changes at once. An id the list does not show (deployed after
//! the list, or gone) is looked up directly too, which tells "gone" (404) from "new".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::beeos::{BeeosClient, Error, Fingerprint, Instance, ListQuery};

/// The last listing of each credential's instances.
#[derive(Default)]
pub struct Snapshots {
    by_credential: Mutex<HashMap<Fingerprint, Arc<tokio::sync::Mutex<Listing>>>>,
}

#[derive(Default)]
struct Listing {
    taken: Option<Instant>,
    instances: HashMap<String, Instance>,
}

impl Snapshots {
    /// `instance_id` as of a listing no older than `max_age` (listing again when it is older),
    /// or as a direct GET when the listing does not show it. `None` means gone (404).
    pub async fn get(
        &self,
        beeos: &BeeosClient,
        instance_id: &str,
        max_age: Duration,
    ) -> Result<Option<Instance>, Error> {
        let listing = self
            .by_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*beeos.credential().fingerprint())
            .or_default()
            .clone();
        {
            // Held across the list call: resources of one credential wait for one listing
            // rather than each starting its own.
            let mut listing = listing.lock().await;
            if listing.taken.is_none_or(|taken| taken.elapsed() >= max_age) {
                let instances = beeos.list_all(&ListQuery::default()).await?;
                listing.instances = instances
                    .into_iter()
                    .map(|instance| (instance.instance_id.clone(), instance))
                    .collect();
                listing.taken = Some(Instant::now());
            }
            if let Some(instance) = listing.instances.get(instance_id) {
                return Ok(Some(instance.clone()));
            }
        }
        get_if_exists(beeos, instance_id).await
    }
}

/// A direct GET; `None` for 404.
pub async fn get_if_exists(
    beeos: &BeeosClient,
    instance_id: &str,
) -> Result<Option<Instance>, Error> {
    match beeos.get(instance_id).await {
        Ok(instance) => Ok(Some(instance)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}
