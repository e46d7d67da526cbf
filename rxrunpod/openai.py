"""The OpenAI-compatible routes of a RunPod endpoint, as observables.

RunPod's LLM workers (vLLM and others) serve ``/v2/{endpoint_id}/openai/v1/…``
with OpenAI's request and response shapes. ``Endpoint.openai`` is an
``OpenAIRoutes`` whose calls return cold observables::

    chunks = ep.openai.chat_completions([{"role": "user", "content": "Hi"}], model="m")
    chunks.pipe(texts()).subscribe(print)             # each text delta as it arrives
    text = chunks.pipe(collect_text()).run()          # the whole reply, blocking

With ``stream=True`` (the default) each server-sent event is one item, the
parsed chunk; ``data: [DONE]`` or the end of the body completes::

    chat_completions(...):  --chunk--chunk--chunk--|
    .pipe(texts()):         --"Hel"--"lo"---"!"----|
    .pipe(collect_text()):  -----------------"Hello!"|

Each subscription sends the request again. Disposing closes the HTTP
connection at once, and the reading thread returns. Errors arrive through
``on_error``: an ``APIError`` subclass for a non-2xx response (with the
server's message), ``StreamProtocolError`` for an ``error`` event, an
``{"error": …}`` chunk, or a body that breaks off mid-event, and
``MalformedResponse`` for event data that is not JSON.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from .errors import APIError, MalformedResponse, StreamProtocolError
from .observable import RunPodObservable
from .sse import EventStream, ServerSentEvent

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["OpenAIRoutes", "chunk_text", "collect_text", "texts"]

logger = logging.getLogger("rxrunpod.openai")

CHAT_COMPLETIONS_PATH = "openai/v1/chat/completions"
COMPLETIONS_PATH = "openai/v1/completions"
MODELS_PATH = "openai/v1/models"

# Identity encoding keeps each event readable as soon as its bytes arrive;
# a compressed body could hold small events back in the decoder.
_STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
_DONE = "[DONE]"
_DATA_START_LENGTH = 200
# json.loads checks its arguments on every call; the bound decoder skips that.
_decode_json = json.JSONDecoder().decode

Chunk = dict[str, Any]


class OpenAIRoutes:
    """Observables over an endpoint's OpenAI-compatible routes; get one from ``Endpoint.openai``.

    Requests go through ``endpoint.http`` (auth, timeouts, typed errors), and
    the blocking reads run on ``endpoint.io_scheduler`` unless a call is given
    ``scheduler=``.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def __repr__(self) -> str:
        return f"OpenAIRoutes(endpoint_id={self._endpoint.http.endpoint_id!r})"

    def chat_completions(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        stream: bool = True,
        scheduler: abc.SchedulerBase | None = None,
        **params: Any,
    ) -> RunPodObservable[Chunk]:
        """POST ``/openai/v1/chat/completions`` on subscribe; emit the chunks or the response.

        ``messages`` are OpenAI chat messages (``{"role": ..., "content":
        ...}``). ``model`` is the served model name; it is left out of the
        body when None. Other keyword arguments (``max_tokens``,
        ``temperature``, ...) go into the body as they are. With ``stream``
        False the one JSON response is the one item.
        """
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise TypeError(
                "messages must be a list of chat messages such as "
                f"[{{'role': 'user', 'content': 'Hi'}}], got {type(messages).__name__}"
            )
        if not messages:
            raise ValueError("messages must contain at least one chat message")
        for position, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise TypeError(
                    f"messages[{position}] must be a mapping with 'role' and 'content', "
                    f"got {type(message).__name__}"
                )
        body = _request_body(model, stream, params, messages=list(messages))
        return self._post(CHAT_COMPLETIONS_PATH, body, stream, scheduler)

    def completions(
        self,
        prompt: str | Sequence[str],
        *,
        model: str | None = None,
        stream: bool = True,
        scheduler: abc.SchedulerBase | None = None,
        **params: Any,
    ) -> RunPodObservable[Chunk]:
        """POST ``/openai/v1/completions`` on subscribe; emit the chunks or the response.

        ``prompt`` is a string or a list of strings. The other arguments are
        those of ``chat_completions``.
        """
        if not isinstance(prompt, str) and not (
            isinstance(prompt, Sequence) and all(isinstance(part, str) for part in prompt)
        ):
            raise TypeError(
                f"prompt must be a string or a list of strings, got {type(prompt).__name__}"
            )
        prompt_value: str | list[str] = prompt if isinstance(prompt, str) else list(prompt)
        body = _request_body(model, stream, params, prompt=prompt_value)
        return self._post(COMPLETIONS_PATH, body, stream, scheduler)

    def models(self, *, scheduler: abc.SchedulerBase | None = None) -> RunPodObservable[Chunk]:
        """GET ``/openai/v1/models`` on subscribe; emit the response (``{"data": [...]}``) once."""

        def fetch() -> Any:
            return self._endpoint.http.request_json("GET", MODELS_PATH, retry_safe=True)

        return _blocking_call(fetch, self._scheduler(scheduler))

    def _post(
        self, path: str, body: dict[str, Any], stream: bool, scheduler: abc.SchedulerBase | None
    ) -> RunPodObservable[Chunk]:
        if stream:
            return _event_stream(self._endpoint, path, body, self._scheduler(scheduler))

        def fetch() -> Any:
            answer = self._endpoint.http.request_json("POST", path, json=body, retry_safe=False)
            _raise_for_error_document(answer, path, self._endpoint.http.endpoint_id)
            return answer

        return _blocking_call(fetch, self._scheduler(scheduler))

    def _scheduler(self, scheduler: abc.SchedulerBase | None) -> abc.SchedulerBase:
        return scheduler if scheduler is not None else self._endpoint.io_scheduler


def _request_body(
    model: str | None, stream: bool, params: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if model is not None:
        body["model"] = model
    body.update(fields)
    body.update(params)
    body["stream"] = bool(stream)
    return body


def _blocking_call(fetch: Callable[[], Any], scheduler: abc.SchedulerBase) -> RunPodObservable[Any]:
    """Run ``fetch`` on the scheduler at subscribe; emit its result, then complete."""

    def subscribe(
        observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        disposed = threading.Event()

        def work(_scheduler: abc.SchedulerBase, _state: Any) -> None:
            try:
                result = fetch()
            except Exception as error:
                if not disposed.is_set():
                    observer.on_error(error)
                return
            if not disposed.is_set():
                observer.on_next(result)
                observer.on_completed()

        scheduled = scheduler.schedule(work)

        def dispose() -> None:
            disposed.set()
            scheduled.dispose()

        return Disposable(dispose)

    return RunPodObservable(subscribe)


def _event_stream(
    endpoint: Endpoint, path: str, body: dict[str, Any], scheduler: abc.SchedulerBase
) -> RunPodObservable[Chunk]:
    """Open the SSE response on the scheduler at subscribe and emit each event's chunk."""

    def subscribe(
        observer: abc.ObserverBase[Chunk], _: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        reader = _StreamReader(endpoint, path, body, observer)
        scheduled = scheduler.schedule(reader.run)

        def dispose() -> None:
            scheduled.dispose()
            reader.dispose()

        return Disposable(dispose)

    return RunPodObservable(subscribe)


class _StreamReader:
    """One subscription's request and read loop; ``dispose`` may come from any thread."""

    def __init__(
        self, endpoint: Endpoint, path: str, body: dict[str, Any], observer: abc.ObserverBase[Chunk]
    ):
        self._endpoint = endpoint
        self._path = path
        self._body = body
        self._observer = observer
        self._lock = threading.Lock()
        self._disposed = False
        self._stream: EventStream | None = None

    def dispose(self) -> None:
        with self._lock:
            self._disposed = True
            stream = self._stream
        if stream is not None:
            stream.close()

    def run(self, _scheduler: abc.SchedulerBase, _state: Any) -> None:
        http = self._endpoint.http
        try:
            response = http.open_stream(
                "POST", self._path, json=self._body, headers=_STREAM_HEADERS
            )
        except Exception as error:
            self._fail(error)
            return

        stream = EventStream(response)
        with self._lock:
            if self._disposed:
                stream.close()
                return
            self._stream = stream

        if not _is_event_stream(response.headers.get("Content-Type", "")):
            self._emit_json_answer(stream)
            return

        # NOTE: when the reader, not the server, sets the pace, this loop plus
        # texts() delivers about 0.75 of the rate of a bare sseclient-py loop
        # (benchmarks/sse_throughput.py, pre-rendered rows, 2-core machine);
        # the gap is the per-event cost of the Rx observer chain.
        on_next = self._observer.on_next
        try:
            for event in stream:
                chunk = _parse_event(event, self._path, http.endpoint_id, response.status_code)
                if chunk is None:
                    break
                on_next(chunk)
        except Exception as error:
            self._fail(error)
            return
        finally:
            stream.close()
        logger.debug("%s: stream ended after %d events", self._path, stream.events_dispatched)
        if not self._disposed:
            self._observer.on_completed()

    def _emit_json_answer(self, stream: EventStream) -> None:
        """Emit a JSON body sent in place of the requested event stream as the one item."""
        response = stream.response
        try:
            content = response.content
        except Exception as error:
            self._fail(
                StreamProtocolError(f"reading the JSON response of {self._path} failed: {error}")
            )
            return
        finally:
            stream.close()
        try:
            answer = json.loads(content)
            _raise_for_error_document(answer, self._path, self._endpoint.http.endpoint_id)
        except ValueError:
            self._fail(
                MalformedResponse(
                    f"POST {self._path} returned {response.status_code} with neither an event "
                    f"stream nor JSON; the body starts with {content[:_DATA_START_LENGTH]!r}",
                    body_start=content[:_DATA_START_LENGTH].decode("utf-8", errors="replace"),
                    method="POST",
                    path=self._path,
                    status_code=response.status_code,
                    endpoint_id=self._endpoint.http.endpoint_id,
                )
            )
            return
        except Exception as error:
            self._fail(error)
            return
        if not self._disposed:
            self._observer.on_next(answer)
            self._observer.on_completed()

    def _fail(self, error: Exception) -> None:
        if self._disposed:
            logger.debug("%s: error after dispose dropped: %s", self._path, error)
            return
        self._observer.on_error(error)


def _is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def _parse_event(event: ServerSentEvent, path: str, endpoint_id: str, status: int) -> Chunk | None:
    """Return the chunk an event carries, None for ``[DONE]``; raise for an error event."""
    data = event.data
    if event.event == "error":
        raise StreamProtocolError(
            f"the event stream of {path} sent an error event: {data[:_DATA_START_LENGTH]}",
            event=event.event,
            data=data,
        )
    if data == _DONE:
        return None
    try:
        chunk = _decode_json(data)
    except ValueError as error:
        raise MalformedResponse(
            f"an event of {path} carries data that is not JSON ({error}); it starts with "
            f"{data[:_DATA_START_LENGTH]!r}",
            body_start=data[:_DATA_START_LENGTH],
            method="POST",
            path=path,
            status_code=status,
            endpoint_id=endpoint_id,
        ) from error
    if not isinstance(chunk, dict):
        raise MalformedResponse(
            f"an event of {path} carries a JSON {type(chunk).__name__} where a chunk object "
            f"belongs; it starts with {data[:_DATA_START_LENGTH]!r}",
            body_start=data[:_DATA_START_LENGTH],
            method="POST",
            path=path,
            status_code=status,
            endpoint_id=endpoint_id,
        )
    # The membership tests keep the common chunk off the slower error check.
    message = _error_message(chunk) if "error" in chunk or chunk.get("object") == "error" else None
    if message is not None:
        raise StreamProtocolError(
            f"the event stream of {path} sent an error: {message}", event=event.event, data=data
        )
    return chunk


def _error_message(document: Mapping[str, Any]) -> str | None:
    """Return the message of an OpenAI or vLLM error document, None for any other document.

    OpenAI sends ``{"error": {"message": ...}}``; vLLM also sends
    ``{"object": "error", "message": ...}``.
    """
    error = document.get("error")
    if error:
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        return str(error)
    if document.get("object") == "error":
        return str(document.get("message") or document)
    return None


def _raise_for_error_document(answer: Any, path: str, endpoint_id: str) -> None:
    if not isinstance(answer, Mapping):
        return
    message = _error_message(answer)
    if message is not None:
        raise APIError(
            f"POST {path} returned an error document: {message}",
            method="POST",
            path=path,
            server_message=message,
            endpoint_id=endpoint_id,
        )


def chunk_text(chunk: Any, index: int | None = 0) -> str:
    """Return the text a chunk or response carries for choice ``index`` (every choice if None).

    Understands chat chunks (``choices[].delta.content``), chat responses
    (``choices[].message.content``), completion chunks and responses
    (``choices[].text``), RunPod's native vLLM output
    (``choices[].tokens``) and plain strings. A chunk without text (a role
    delta, a usage-only chunk) gives ``""``.
    """
    if type(chunk) is dict:
        # Fast path for the usual streamed chat chunk: exactly one choice with
        # a delta. Any other shape raises here and takes the general path.
        try:
            (choice,) = chunk["choices"]
            content = choice["delta"]["content"]
        except (KeyError, TypeError, ValueError):
            pass
        else:
            if type(content) is str and (index is None or choice.get("index", 0) == index):
                return content
    if isinstance(chunk, str):
        return chunk
    if not isinstance(chunk, Mapping):
        raise TypeError(
            f"expected an OpenAI chunk (a dict) or a string, got {type(chunk).__name__}"
        )
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return ""
    parts: list[str] = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            continue
        if index is not None and choice.get("index", position) != index:
            continue
        parts.append(_choice_text(choice))
    return "".join(parts)


def _choice_text(choice: Mapping[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    if isinstance(text, str):
        return text
    message = choice.get("message")
    if isinstance(message, Mapping):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    tokens = choice.get("tokens")
    if isinstance(tokens, list):
        return "".join(token for token in tokens if isinstance(token, str))
    return ""


def texts(index: int | None = 0) -> Callable[[Observable[Any]], RunPodObservable[str]]:
    """Operator: emit the text of each chunk (see ``chunk_text``), skipping chunks without text.

    Works on the items of ``chat_completions`` and ``completions``, streamed
    or not, and on ``job.stream()`` items that are strings or native vLLM
    batches. ``index`` picks the choice when the request asked for ``n`` > 1;
    None joins every choice's text. An item of another type is a
    ``TypeError`` through ``on_error``.
    """

    def operator(source: Observable[Any]) -> RunPodObservable[str]:
        def subscribe(
            observer: abc.ObserverBase[str], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(chunk: Any) -> None:
                try:
                    text = chunk_text(chunk, index)
                except TypeError as error:
                    observer.on_error(error)
                    return
                if text:
                    observer.on_next(text)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return RunPodObservable(subscribe)

    return operator


def collect_text(index: int | None = 0) -> Callable[[Observable[Any]], RunPodObservable[str]]:
    """Operator: emit the whole text once the source completes (``""`` when it had none).

    ``ep.openai.chat_completions(messages).pipe(collect_text()).run()``
    returns the reply as one string. ``index`` is that of ``texts``.
    """

    def operator(source: Observable[Any]) -> RunPodObservable[str]:
        def subscribe(
            observer: abc.ObserverBase[str], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            parts: list[str] = []

            def on_completed() -> None:
                observer.on_next("".join(parts))
                observer.on_completed()

            return texts(index)(source).subscribe(
                parts.append, observer.on_error, on_completed, scheduler=scheduler
            )

        return RunPodObservable(subscribe)

    return operator
