"""Global rate limiting for the edge: Envoy's RateLimitService backed by Redis counters."""
