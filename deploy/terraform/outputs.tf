output "queue_url" {
  description = "URL of the work queue (what producers send to)."
  value       = aws_sqs_queue.main.url
}

output "dlq_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "service_name" {
  description = "ECS service of the worker."
  value       = aws_ecs_service.worker.name
}

output "task_definition_arn" {
  description = "Task definition revision the service runs."
  value       = aws_ecs_task_definition.worker.arn
}

output "task_role_arn" {
  description = "The worker's own credentials (consume its queue only)."
  value       = aws_iam_role.task.arn
}

output "elasticache_parameter_group_name" {
  description = "Parameter group (maxmemory-policy noeviction) for the ElastiCache cluster that holds the idempotency records."
  value       = aws_elasticache_parameter_group.idempotency.name
}
