"""The transports: the only code that does network I/O.

`base` holds the protocols every transport implements and the wording of their errors;
`requests` and `aiohttp` are the default transports (each the only importer of its HTTP
library); `fake` answers from a script, for tests; `watchdog` bounds blocking sockets by the
call's total deadline. The public face of all this is `chatlib.transports`.
"""
