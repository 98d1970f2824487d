"""The offline side of the serving loop: read `irp serve --log-dir` files and join decisions with feedback.

    from irp.logs import join_logs
    report = join_logs("logs/", "joined.jsonl", label="tap")

See docs/loop.md for the file format (the contract shared with `irp serve`) and the join rules.
"""

from irp.logs.join import JoinReport, join_logs, joined_records
from irp.logs.reader import FEEDBACK_EVENTS, LogScan, scan_log_dir

__all__ = ["FEEDBACK_EVENTS", "JoinReport", "LogScan", "join_logs", "joined_records", "scan_log_dir"]
