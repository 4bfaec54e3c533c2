"""A payment-webhook worker on fargate-runtime: copy this folder to start your own."""
