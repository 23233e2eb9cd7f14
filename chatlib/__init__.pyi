# The public names of `chatlib`, written once: type checkers and IDEs read this stub, and
# `chatlib/__init__.py` reads it at import time to know which module serves each name lazily
# (the `lazy_loader` / SPEC 1 pattern). A star import makes every name in that module's
# `__all__` public here too.

from chatlib._accumulate import ChatCompletionAccumulator as ChatCompletionAccumulator
from chatlib._async import AsyncChat as AsyncChat
from chatlib._async import AsyncChatStream as AsyncChatStream
from chatlib._config import ClientSettings as ClientSettings
from chatlib._config import Timeout as Timeout
from chatlib._events import *
from chatlib._functions import create_chat_completion as create_chat_completion
from chatlib._functions import create_chat_completion_stream as create_chat_completion_stream
from chatlib._headers import Headers as Headers
from chatlib._metadata import RateLimits as RateLimits
from chatlib._schema import json_schema as json_schema
from chatlib._stored_async import AsyncStoredCompletions as AsyncStoredCompletions
from chatlib._stored_sync import StoredCompletions as StoredCompletions
from chatlib._sync import ChatStream as ChatStream
from chatlib._sync import SyncChat as SyncChat
from chatlib._tool_loop import ToolResult as ToolResult
from chatlib._tool_loop import ToolRunChunk as ToolRunChunk
from chatlib._tool_loop import ToolRunCompletion as ToolRunCompletion
from chatlib._tool_loop import ToolRunDone as ToolRunDone
from chatlib._tool_loop import ToolRunEvent as ToolRunEvent
from chatlib._tool_loop import ToolRunResult as ToolRunResult
from chatlib._tools import FunctionTool as FunctionTool
from chatlib._tools import function_tool as function_tool
from chatlib.azure import AsyncAzureChat as AsyncAzureChat
from chatlib.azure import AzureChat as AzureChat
from chatlib.errors import *
from chatlib.models import ChatCompletionChoice as ChatCompletionChoice
from chatlib.models import ChatCompletionChunkChoice as ChatCompletionChunkChoice
from chatlib.models import ChatCompletionDeleted as ChatCompletionDeleted
from chatlib.models import ChatCompletionDelta as ChatCompletionDelta
from chatlib.models import ChatCompletionList as ChatCompletionList
from chatlib.models import ChatCompletionMessageList as ChatCompletionMessageList
from chatlib.models import ChatCompletionStoreMessage as ChatCompletionStoreMessage
from chatlib.models import ChatCompletionUsage as ChatCompletionUsage
from chatlib.models import ChatMessage as ChatMessage
from chatlib.models import ChatRole as ChatRole
from chatlib.models import CreateChatCompletionChunk as CreateChatCompletionChunk
from chatlib.models import CreateChatCompletionRequest as CreateChatCompletionRequest
from chatlib.models import CreateChatCompletionResponse as CreateChatCompletionResponse
from chatlib.models import FinishReason as FinishReason

__version__: str
