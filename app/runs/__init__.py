"""Starting, tracking and recovering runs off the request: the run service and its pieces.

- `store`: the upload store (files under their SHA-256, sniffed, size-limited);
- `queue`: recording runs, claiming them in queue order, cancel and retry (SQLite: via the intake);
- `executor`: the Executor protocol, the embedded thread executor, and executing a claimed run with
  its progress reporter and cancel/heartbeat watcher;
- `liveness`: worker identity and lock files, leases, recovery of dead workers' runs;
- `housekeeping`: removing stored files after the retention;
- `service`: the `RunService` facade the web app, the API and the CLI use, and `init_app`.
"""
from .errors import RunNotFound, RunStateError
from .executor import Execution, Executor, ProgressReporter, ThreadExecutor
from .liveness import INTERRUPTED
from .progress import write_json_atomically
from .queue import QUEUE_KINDS
from .service import RunService, current_service, init_app
from .store import UploadStore

__all__ = [
           "INTERRUPTED",
           "QUEUE_KINDS",
           "Execution",
           "Executor",
           "ProgressReporter",
           "RunNotFound",
           "RunService",
           "RunStateError",
           "ThreadExecutor",
           "UploadStore",
           "current_service",
           "init_app",
           "write_json_atomically",
]
