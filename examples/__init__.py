"""Starters users copy: an SQS payment worker and a payments HTTP API."""
