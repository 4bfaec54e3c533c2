resource "aws_ecs_cluster" "this" {
  name = var.name

  # Container Insights publishes RunningTaskCount, the denominator of backlog per task.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
}

resource "aws_ecs_task_definition" "worker" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  # Graviton on Spot: Fargate Spot runs ARM64 Linux tasks on platform 1.4.0+ (ECS API reference,
  # CapacityProviderStrategyItem), and the Graviton and Spot discounts combine.
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }

  # The only writable path of the read-only container (task ephemeral storage).
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.worker_container])
}

resource "aws_security_group" "worker" {
  name        = "${var.name}-tasks"
  description = "${var.name} tasks: no inbound; outbound to AWS APIs and Redis"
  vpc_id      = var.vpc_id
}

# Outbound only (SQS, ECR, CloudWatch Logs, Secrets Manager over 443; Redis). Narrow it to
# VPC endpoints and the Redis security group where the network allows.
resource "aws_vpc_security_group_egress_rule" "worker_all" {
  security_group_id = aws_security_group.worker.id
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_ecs_service" "worker" {
  name            = var.name
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.min_capacity

  # on_demand_base tasks always on FARGATE; above it, on_demand_weight : spot_weight.
  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.on_demand_base
    weight            = var.on_demand_weight
  }
  capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = var.spot_weight
  }

  # A deploy whose tasks fail to start or fail health checks rolls back by itself; the
  # runtime exits 78 at once on bad settings, so a broken config trips this quickly.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = var.assign_public_ip
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # Autoscaling owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_ecs_cluster_capacity_providers.this, aws_iam_role_policy.execution]
}
