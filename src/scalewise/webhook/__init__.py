"""Webhook-initiated scaling: Alertmanager notifications and signed action requests -> Prefect runs."""

from __future__ import annotations

from scalewise.webhook.app import create_app
from scalewise.webhook.config import WebhookConfig, load_config

__all__ = ["WebhookConfig", "create_app", "load_config"]
