"""Shared pytest setup: loopback SMTP/HTTP receivers (receivers.py) and core fixtures (fixtures_core.py)."""

pytest_plugins = ["receivers", "fixtures_core"]
