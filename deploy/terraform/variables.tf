variable "name" {
  description = "Name of the worker: cluster, service, task family, roles, log group and queue are named after it."
  type        = string
  default     = "sqs-worker"
}

variable "region" {
  description = "AWS region of everything here."
  type        = string
  default     = "us-east-1"
}

variable "image" {
  description = "Worker image, pinned by digest (REPO@sha256:...) or an immutable git-commit tag; never latest."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.image)) || (can(regex(":[^/:]+$", var.image)) && !can(regex(":latest$", var.image)))
    error_message = "Pin the image by digest or by a git-commit tag: ECS pulls at every task start, and latest is whatever was pushed last."
  }
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the image comes from (the execution role may pull from it only)."
  type        = string
}

variable "redis_url_secret_arn" {
  description = "Secrets Manager ARN of the Redis URL (with its password) used for idempotency keys."
  type        = string
}

variable "elasticache_parameter_group_family" {
  description = "Engine family of the ElastiCache cluster holding the idempotency records (redis7, valkey7, valkey8...): its parameter group sets maxmemory-policy noeviction."
  type        = string
  default     = "redis7"
}

variable "vpc_id" {
  description = "VPC of the tasks."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (with a NAT gateway or VPC endpoints for SQS, ECR, logs, Secrets Manager)."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (only for public subnets without NAT)."
  type        = bool
  default     = false
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU); with memory, a valid Fargate pair (`fargate-runtime size` picks one)."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 1024
}

variable "on_demand_base" {
  description = "Tasks always on on-demand FARGATE, whatever Spot does."
  type        = number
  default     = 1
}

variable "on_demand_weight" {
  description = "Share of the tasks above the base placed on FARGATE (relative to spot_weight)."
  type        = number
  default     = 1
}

variable "spot_weight" {
  description = "Share of the tasks above the base placed on FARGATE_SPOT (x86_64 and ARM64; 2-minute warning as SIGTERM)."
  type        = number
  default     = 3
}

variable "min_capacity" {
  description = "Fewest tasks. At least 1: backlog per task is undefined with none running."
  type        = number
  default     = 1
}

variable "max_capacity" {
  description = "Most tasks."
  type        = number
  default     = 10
}

variable "backlog_per_task_target" {
  description = "Visible messages per running task to aim for: acceptable latency (s) / time per message (s) x concurrency."
  type        = number
  default     = 100
}

variable "max_receive_count" {
  description = "Receives before a message moves to the DLQ. Releases at shutdown and in-progress backoffs count as receives too, so leave room for Spot interruptions."
  type        = number
  default     = 10
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 30
}

variable "alarm_actions" {
  description = "SNS topic ARNs told when messages reach the DLQ."
  type        = list(string)
  default     = []
}
