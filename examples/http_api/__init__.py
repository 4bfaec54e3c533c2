"""A payments HTTP API with Idempotency-Key, hosted by the supervisor: copy it as a starter."""
