//! Flood control: a token bucket per user (or per IP before login). Over the
//! limit, requests get 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{
    config::RateLimitConfig,
    error::{Error, ErrorKind, Result},
};

pub struct RateLimiter {
    enabled: bool,
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            enabled: config.enabled,
            per_second: config.per_second,
            burst: f64::from(config.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or fails with the time until one is available.
    pub fn check(&self, key: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 600);
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let retry_after_ms = ((1.0 - *tokens) / self.per_second * 1000.0).ceil() as u64;
            Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms }, "too many requests; retry later"))
        }
    }
}
