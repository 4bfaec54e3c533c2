# Two roles, each with only what it needs:
#   execution role: used by ECS to start the task (pull the image, create log streams, read
#                   the secrets into the environment); the application never sees it.
#   task role:      the application's credentials: consume its one queue (and read its
#                   backlog for the telemetry gauge), nothing else.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # Confused-deputy guard: only ECS acting for this account may assume the roles.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [var.ecr_repository_arn]
  }
  statement {
    # GetAuthorizationToken has no resource-level permissions: "*" is the only form.
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }
  statement {
    # A secret encrypted with a customer-managed KMS key also needs kms:Decrypt on that key.
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.redis_url_secret_arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-task"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    # Receive, delete on success, change visibility (heartbeat, backoff, release at shutdown);
    # GetQueueAttributes reads the queue at start (its redrive policy) and the backlog gauge
    # (only with telemetry on, once a minute). The queue URL comes from the environment, so no
    # GetQueueUrl; SSE-SQS needs no KMS grant.
    sid = "ConsumeQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.main.arn]
  }
  statement {
    # A message near maxReceiveCount for reasons not its own (shutdowns) is re-queued as a copy;
    # one that failed maxReceiveCount times is moved to the DLQ by the runtime (FIFO poison).
    sid       = "RequeueAndDeadLetter"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.main.arn, aws_sqs_queue.dlq.arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "consume-queue"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
