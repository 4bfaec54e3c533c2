# Idempotency records carry TTLs (the lease, then the retention): under any maxmemory-policy but
# noeviction Redis may evict them under memory pressure, and completed work whose record is gone
# runs again. ElastiCache's default parameter groups use volatile-lru, which picks exactly the
# keys with a TTL. Attach this group to the replication group (or cluster) that
# holds the records: `parameter_group_name = <output elasticache_parameter_group_name>`. The
# worker refuses to start (exit 78) on any other policy unless
# FARGATE_RUNTIME_IDEMPOTENCY_ACCEPT_EVICTION_RISK=true. With noeviction a full Redis refuses
# writes instead (claims fail closed): alarm on its DatabaseMemoryUsagePercentage.
resource "aws_elasticache_parameter_group" "idempotency" {
  name        = "${var.name}-idempotency"
  family      = var.elasticache_parameter_group_family
  description = "Idempotency records: never evicted (maxmemory-policy noeviction)"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}
