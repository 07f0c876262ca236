"""The runner: configuration, the per-broker lifecycle, polling, live control and status."""

from .app import Runner
from .config import BrokerConfig, RunnerConfig, load_config, load_config_file

__all__ = ["BrokerConfig", "Runner", "RunnerConfig", "load_config", "load_config_file"]
