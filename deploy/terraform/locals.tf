# The worker's container, mirroring deploy/sqs_worker.taskdef.json (tests/deploy checks that
# they agree). Plain values live here so one change reaches every place that must match.
locals {
  container_name = "worker"
  queue_name     = "${var.name}-payments"
  log_group_name = "/ecs/${var.name}"
  health_port    = 8081
  # Fargate Spot warns two minutes ahead; 120 s is also the most ECS allows. The runtime must
  # plan with the same number (FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS) or it is SIGKILLed mid-drain.
  stop_timeout_seconds = 120
  # The consumer's default: short, extended by its heartbeat only for messages that need it.
  visibility_timeout_seconds = 20

  worker_container = {
    name                   = local.container_name
    image                  = var.image
    command                = ["sqs_worker.app:app"]
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    linuxParameters        = { initProcessEnabled = true }
    stopTimeout            = local.stop_timeout_seconds
    environment = [
      { name = "FARGATE_RUNTIME_SERVICE_NAME", value = var.name },
      { name = "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", value = tostring(local.stop_timeout_seconds) },
      { name = "FARGATE_RUNTIME_HEALTH_PORT", value = tostring(local.health_port) },
      { name = "FARGATE_RUNTIME_LOG_LEVEL", value = "INFO" },
      { name = "FARGATE_RUNTIME_SQS_QUEUE_URL", value = aws_sqs_queue.main.url },
      { name = "FARGATE_RUNTIME_SQS_CONCURRENCY", value = "10" },
      { name = "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS", value = tostring(local.visibility_timeout_seconds) },
      # The example's stand-in for a payment provider; /tmp is the only writable path.
      { name = "PAYMENTS_LEDGER_PATH", value = "/tmp/payments-ledger.sqlite3" },
    ]
    # Resolved by the execution role at task start; never in plain environment.
    secrets = [
      { name = "REDIS_URL", valueFrom = var.redis_url_secret_arn },
    ]
    mountPoints = [
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    healthCheck = {
      command     = ["CMD", "fargate-runtime", "healthcheck"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = local.log_group_name
        awslogs-region        = var.region
        awslogs-stream-prefix = local.container_name
        # A slow CloudWatch must not block stdout (and with it the drain); drop instead.
        mode            = "non-blocking"
        max-buffer-size = "25m"
      }
    }
  }
}
