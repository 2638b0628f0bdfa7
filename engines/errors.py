"""Execution errors.

ExecutionError
├── InvalidApplyRequest(message)   a request body the engine cannot run (bad controls, unknown columns)
│   ├── InputQueryFailed(message)  the input query failed while the call read it (OML's errorCode 1020)
│   ├── EnvironmentNotFound(name)  `envName` names no environment of this server's
│   ├── EnvironmentUnsupported(message)  the engine runs no per-script environments (the Dask engine)
│   └── PreloadRefused(message)    a preload cannot be made (already preloaded, quota) or is not there to delete
├── ScriptFailed(message, stdout)  the user's function raised; message has the script's traceback
├── ResultNotSerializable(message) the function returned something with no JSON rendering
├── OutputTooLong(limit)           the result is longer than the output limit (OML's errorCode 1024)
│   └── OutputTooLarge(max_bytes)  the result is bigger than the output size limit, in bytes
├── TimeLimitExceeded(seconds)     the call ran past its time limit; its workers were killed
├── WorkerCrashed(message)         a worker died (os._exit, segfault, SIGKILL, out of memory)
├── PoolBusy(retry_after)          no worker became free in time
│   └── ClusterUnavailable(message, retry_after)  the Dask scheduler cannot be reached, or has no workers
├── JobQueueFull(retry_after)      too many jobs wait to run, over all users
│   └── UserJobQueueFull(user, limit, retry_after)  too many of this user's own jobs wait to run
├── Cancelled()                    the call was cancelled (job deleted)
├── JobAbandoned(message)          the servers running a job stopped too often; it was not run again
├── EngineFault(message)           a failure of pyqd itself (the server log has the details)
└── ScoringError(message)          scoring a deployed model (OML Services) failed
    ├── ModelUnreadable(message)   the bytes are not a model of the declared type (when storing it)
    ├── ScoreRejected(message)     the score request does not fit the model (names the record and attribute)
    └── ModelFailed(message)       the model raised while scoring, or answered what cannot be read

JobError
├── JobNotFound(job_id)            no such job of the caller's
└── JobNotReady(job_id)            the job has no result yet

A job keeps its outcome as the error's class name and message; `stored_error` turns them back into the error.
"""

from __future__ import annotations


class ExecutionError(Exception):
    """Base of the execution errors."""


class InvalidApplyRequest(ExecutionError):
    pass


class InputQueryFailed(InvalidApplyRequest):
    pass


class EnvironmentNotFound(InvalidApplyRequest):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Environment {name!r} does not exist on this server (GET /oml/api/py-scripts/v1/envs lists them)"
        )


class EnvironmentUnsupported(InvalidApplyRequest):
    pass


class PreloadRefused(InvalidApplyRequest):
    pass


class ScriptFailed(ExecutionError):
    def __init__(self, message: str, stdout: str = "") -> None:
        self.stdout = stdout
        super().__init__(message)


class ResultNotSerializable(ExecutionError):
    pass


class OutputTooLong(ExecutionError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"Output exceeds maximum length {limit}")


class OutputTooLarge(OutputTooLong):
    def __init__(self, max_bytes: int) -> None:
        self.limit = self.max_bytes = max_bytes
        ExecutionError.__init__(self, f"Output exceeds maximum size of {max_bytes} bytes")


class TimeLimitExceeded(ExecutionError):
    def __init__(self, seconds: float, job: bool = False) -> None:
        self.seconds = seconds
        if job:
            message = f"The job ran longer than its timeout of {seconds:g} s and was stopped"
        else:
            message = (
                f"The call ran longer than its time limit of {seconds:g} s and was stopped; "
                "run long work asynchronously (asyncFlag) with a larger timeout"
            )
        super().__init__(message)


class WorkerCrashed(ExecutionError):
    pass


class PoolBusy(ExecutionError):
    def __init__(self, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__("All workers are busy; retry later")


class ClusterUnavailable(PoolBusy):
    def __init__(self, message: str, retry_after: int = 5) -> None:
        self.retry_after = retry_after
        ExecutionError.__init__(self, message)


class JobQueueFull(ExecutionError):
    def __init__(self, retry_after: int = 5) -> None:
        self.retry_after = retry_after
        super().__init__("Too many jobs are waiting to run; retry later")


class UserJobQueueFull(JobQueueFull):
    def __init__(self, user: str, limit: int, retry_after: int = 5) -> None:
        self.user, self.limit, self.retry_after = user, limit, retry_after
        ExecutionError.__init__(self, f"{user} has {limit} jobs waiting to run, the most allowed; retry later")


class Cancelled(ExecutionError):
    def __init__(self) -> None:
        super().__init__("The call was cancelled")


class JobAbandoned(ExecutionError):
    pass


class EngineFault(ExecutionError):
    pass


class ScoringError(ExecutionError):
    pass


class ModelUnreadable(ScoringError):
    pass


class ScoreRejected(ScoringError):
    pass


class ModelFailed(ScoringError):
    pass


def stored_error(name: str, message: str) -> ExecutionError:
    """The ExecutionError a job stored as (class name, message); EngineFault for a name no longer known."""
    classes = {c.__name__: c for c in _subclasses(ExecutionError)}
    cls = classes.get(name, EngineFault)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def _subclasses(cls: type[ExecutionError]) -> list[type[ExecutionError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


class JobError(Exception):
    """Base of the job lookup errors."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job {job_id} does not exist")


class JobNotReady(JobError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"The result of job {job_id} is not ready yet")
