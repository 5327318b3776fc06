//! Names of the simulated contract operations, used as keys for faults and call counters.

use serde::{Deserialize, Serialize};

/// One simulated contract operation. Serialized as the lower-case key used by the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /api/v1/instances`
    Deploy,
    /// `GET /api/v1/instances`
    List,
    /// `GET /api/v1/instances/{id}`
    Get,
    /// `POST /api/v1/instances/{id}/start`
    Start,
    /// `POST /api/v1/instances/{id}/stop`
    Stop,
    /// `POST /api/v1/instances/{id}/restart`
    Restart,
    /// `DELETE /api/v1/instances/{id}`
    Destroy,
    /// `GET /api/v1/providers`
    Providers,
    /// `GET /api/v1/deploy/regions`
    Regions,
    /// `GET /api/v1/deploy/models`
    Models,
}

impl Route {
    /// Every route, in the order the admin API lists them.
    pub const ALL: [Route; 10] = [
        Route::Deploy,
        Route::List,
        Route::Get,
        Route::Start,
        Route::Stop,
        Route::Restart,
        Route::Destroy,
        Route::Providers,
        Route::Regions,
        Route::Models,
    ];

    /// The admin API key, e.g. `"deploy"`.
    pub fn key(self) -> &'static str {
        match self {
            Route::Deploy => "deploy",
            Route::List => "list",
            Route::Get => "get",
            Route::Start => "start",
            Route::Stop => "stop",
            Route::Restart => "restart",
            Route::Destroy => "destroy",
            Route::Providers => "providers",
            Route::Regions => "regions",
            Route::Models => "models",
        }
    }

    /// Parses an admin API key.
    pub fn from_key(key: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.key() == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_serde_and_from_key() {
        for route in Route::ALL {
            let json = serde_json::to_string(&route).unwrap();
            assert_eq!(json, format!("\"{}\"", route.key()));
            assert_eq!(Route::from_key(route.key()), Some(route));
        }
        assert_eq!(Route::from_key("update"), None);
    }
}
