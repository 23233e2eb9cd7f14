# The public names of `chatlib.batch`, written once (see `chatlib/_lazy.py`).

from chatlib.batch._dask import run_dask as run_dask
from chatlib.batch._format import BatchError as BatchError
from chatlib.batch._format import BatchResult as BatchResult
from chatlib.batch._format import read_results as read_results
from chatlib.batch._format import request_line as request_line
from chatlib.batch._format import write_requests as write_requests
from chatlib.batch._limits import RateLimiter as RateLimiter
from chatlib.batch._ray import run_ray as run_ray
from chatlib.batch._resume import OutputFileError as OutputFileError
from chatlib.batch._runner import run as run
from chatlib.batch._runner import run_async as run_async
from chatlib.batch._summary import BatchInterrupted as BatchInterrupted
from chatlib.batch._summary import BatchSummary as BatchSummary
