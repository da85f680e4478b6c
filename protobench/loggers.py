"""A run's live loggers behind one guard: a logger that fails is reported once (one warning line) and
dropped, and the run goes on without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protobench.io import warn


class RunLoggers:
    """The loggers the config names, built for one run; `log` and `close` never raise."""

    def __init__(self, cfg: Any, registry: Any, run_dir: Path):
        self.active: list[Any] = []
        context = {"run_dir": Path(run_dir), "run_id": cfg.run_id(), "run_config": cfg.to_dict()}
        accepted_options = (cfg.options or {}).get("logger", {})
        for name in cfg.loggers:
            try:
                from protobench.plugins import CONTEXT_KEYS, plugin_options

                known = plugin_options(registry.get("logger", name).cls, CONTEXT_KEYS)
                options = {k: v for k, v in accepted_options.items() if k in known}
                self.active.append(registry.build("logger", name, options, context))
            except Exception as exc:
                self._failed(name, "could not start", exc)

    def _failed(self, name: str, what: str, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0]
        warn(f"logger {name} {what} ({type(exc).__name__}: {first}); the run goes on without it")

    def log(self, event: dict[str, Any]) -> None:
        for logger in list(self.active):
            try:
                logger.log(event)
            except Exception as exc:
                self.active.remove(logger)
                self._failed(logger.name, "failed", exc)
                try:
                    logger.close()
                except Exception:  # already reported: one line per failing logger
                    pass

    def close(self) -> None:
        for logger in self.active:
            try:
                logger.close()
            except Exception as exc:
                self._failed(logger.name, "failed to close", exc)
        self.active = []
