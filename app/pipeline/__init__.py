"""The Sluice pipeline: extract → validate → stage → load → lineage and watermark. No Flask here.

Every function takes a SQLAlchemy Connection that is not inside a transaction: the pipeline
decides where its transactions begin and end, so that only the final apply holds the write lock.
"""
from .dead_letters import DeadLetterError, discard, parse_edit, reopen, reprocess, retry_hint, select_ids
from .extract import InputError, TooLarge, sniff
from .run import (
                  Options,
                  RunCancelled,
                  RunFailed,
                  Settings,
                  create_run,
                  execute_run,
                  run_file,
                  summary_of,
                  warnings_of,
)
from .watermark import WatermarkError

__all__ = [
                  "DeadLetterError",
                  "InputError",
                  "Options",
                  "RunCancelled",
                  "RunFailed",
                  "Settings",
                  "TooLarge",
                  "WatermarkError",
                  "create_run",
                  "discard",
                  "execute_run",
                  "parse_edit",
                  "reopen",
                  "reprocess",
                  "retry_hint",
                  "run_file",
                  "select_ids",
                  "sniff",
                  "summary_of",
                  "warnings_of",
]
